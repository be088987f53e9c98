"""Which Ray cluster a sweep runs on, and whether one trial fits on one of its nodes.

Owns: choosing the cluster (--address, else $RAY_ADDRESS, else a new local one: never the cluster
Ray's /tmp/ray/ray_current_cluster names, which on a shared machine may be someone else's), joining
or starting it (a refused token or an address nobody answers is bad input, exit 2), the token of a
local cluster (mode 600), the libraries' boilerplate on the console, the per-trial resource bundle
in Ray's names, the fit check (one node must hold a whole trial; cluster totals can hide that none
does), and the autoscaling wait.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import warnings

from dnasweep.errors import ConfigError, Problem
from dnasweep.space import SearchSpace

_KEYS = {"CPU": "resources.cpu", "GPU": "resources.gpu", "memory": "resources.memory_gb"}


def bundle(space: SearchSpace) -> dict:
    """One trial's resources in Ray's node-resource names (memory in bytes): what Tune reserves
    per trial, so Ray packs no more trials on a node than its CPUs, GPUs and memory hold."""
    r = space.resources
    b = {"CPU": r.cpu, "GPU": r.gpu, **r.custom}
    if r.memory_gb:
        b["memory"] = int(r.memory_gb * 2**30)
    return {k: v for k, v in b.items() if v}


def check_fits(space: SearchSpace, nodes: list[dict] | dict) -> None:
    """Some node must hold one whole trial, or it would stay PENDING forever."""
    nodes = [nodes] if isinstance(nodes, dict) else nodes
    need = bundle(space)
    if any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
        return
    p = []
    for k, v in need.items():
        best = max((n.get(k, 0) for n in nodes), default=0)
        if best < v:
            shown = (lambda x: f"{x / 2**30:.3g} GiB") if k == "memory" else (lambda x: f"{x:g}")
            p.append(Problem(_KEYS.get(k, f"resources.custom.{k}"),
                             f"each trial asks for {shown(v)} {k}, the largest node of the cluster has {shown(best)}: "
                             "it would stay PENDING forever",
                             "lower it, connect to a cluster that has it (--address), or on an autoscaling cluster "
                             "pass --autoscaling so dnasweep asks for a node and waits"))
    raise ConfigError(p, space.source)


def _node_resources() -> list[dict]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


_VERBOSE = True  # library_output(verbose=False) turns the libraries' boilerplate off

# Loggers whose lines are boilerplate on a sweep's console (unless --verbose): MLflow's "Creating
# initial MLflow database tables..." / "Updating database tables", alembic's migrations (INFO), and
# Ray's "Token authentication is enabled for this Ray cluster" (a WARNING, on every new local cluster).
_QUIET_LOGGERS = {"mlflow.store.db.utils": logging.WARNING, "alembic": logging.WARNING,
                  "ray._private.authentication.authentication_token_setup": logging.ERROR}


def library_output(verbose: bool) -> None:
    """`dnasweep run` / `resume` print their own lines; Ray's, Tune's and MLflow's boilerplate (Ray's
    "Started a local Ray instance" / dashboard URL, Tune's configuration box and TensorBoard hint,
    MLflow's table creation) shows only with --verbose. Call before the sweep starts."""
    global _VERBOSE
    _VERBOSE = verbose
    if verbose:
        return
    # Tune's new console output prints the configuration box and the TensorBoard hint even with
    # RunConfig(verbose=0); the legacy output prints nothing at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # Optuna's ExperimentalWarning for study.set_metric_names (stable in use since Optuna 3.2)
    warnings.filterwarnings("ignore", message=r".*set_metric_names is experimental")


def cluster_address(address: str | None) -> tuple[str, str]:
    """The address for ray.init and the line that names the cluster: --address, then $RAY_ADDRESS,
    else "local", a new cluster of this process. Never None: ray.init(None) would join whatever
    cluster /tmp/ray/ray_current_cluster names (`ray start` by anyone on the machine)."""
    if address:
        how = "--address"
    elif os.environ.get("RAY_ADDRESS"):
        address, how = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    else:
        address, how = "local", ""
    if address == "local":
        return address, ("Ray cluster: a new local cluster for this sweep (it ends with the sweep; pass --address "
                         "or set RAY_ADDRESS to use a running one)")
    if address == "auto":
        return address, f"Ray cluster: the one `ray start` recorded on this machine (auto, from {how})"
    return address, f"Ray cluster: {address} (from {how})"


def token_path() -> str:
    """The token file Ray reads: $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def ensure_private_token(log) -> None:
    """A new local cluster runs with token auth (Ray's default since 2.59), and Ray writes a missing
    token file with the umask's mode (0644: every user of the machine could read it and submit jobs).
    Create it first, mode 600. (RAY_AUTH_MODE is left to Ray: set here, after `import ray`, this
    process would keep Ray's cached "disabled" and its own new cluster would refuse it.)"""
    if os.environ.get("RAY_AUTH_MODE", "token") != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return  # RAY_AUTH_MODE=disabled (the user's choice), or a token in the environment
    path = token_path()
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            log(f"warning: the Ray token {path} is readable by other users (mode {mode:o}); with it they can run "
                f"code on your clusters: chmod 600 {path}")
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an empty file that was already there keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 random bits, as `ray get-auth-token --generate`
    log(f"generated a Ray auth token for local clusters in {path} (mode 600)")


def _connect_problem(e: BaseException, address: str) -> Problem | None:
    """What a failed ray.init(address) means for the user, or None when it is not about the address."""
    chain, x = [], e
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    names = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain)
    key = "--address" if address != os.environ.get("RAY_ADDRESS") else "RAY_ADDRESS"
    if "AuthenticationError" in names or any(w in text for w in ("AuthenticationError", "InvalidAuthToken",
                                                                   "Unauthenticated")):
        if os.environ.get("RAY_AUTH_MODE") != "token":
            return Problem("RAY_AUTH_MODE", f"the Ray cluster at {address} uses token authentication and this "
                           "client sent no token (RAY_AUTH_MODE is not 'token')",
                           f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_path()}  "
                           "(the file holding the cluster's token)")
        return Problem("RAY_AUTH_TOKEN_PATH", f"the Ray cluster at {address} refused this client's token "
                       f"({'$RAY_AUTH_TOKEN' if os.environ.get('RAY_AUTH_TOKEN') else token_path()})",
                       "export RAY_AUTH_TOKEN_PATH=FILE with the file holding the cluster's token "
                       "(jobs/local-cluster.sh start prints it; cloud clusters use your ~/.ray/auth_token)")
    if isinstance(e, ConnectionError):
        return Problem(key, f"no Ray cluster answers at {address}",
                       f"check the address (ray status --address {address}), or pass neither --address nor "
                       "RAY_ADDRESS to run on a new local cluster")
    return None


def init_ray(space: SearchSpace, address: str | None, log, autoscaling: bool | None = None) -> None:
    import ray

    address, where = cluster_address(address)
    log(where)  # first: a connection that hangs or fails says which cluster it was
    local = address == "local"
    if local:
        ensure_private_token(log)
    try:
        # The dashboard of a cluster we start binds to 127.0.0.1 only (ssh -L 8265 to watch it remotely).
        ctx = ray.init(address=address, ignore_reinit_error=True, include_dashboard=local,
                       dashboard_host="127.0.0.1", log_to_driver=False,
                       logging_level=logging.INFO if _VERBOSE else logging.WARNING)
    except Exception as e:
        problem = None if local else _connect_problem(e, address)
        if problem is None:
            raise
        raise ConfigError([problem], f"Ray cluster {address}") from None
    if autoscaling is None:
        autoscaling = os.environ.get("DNASWEEP_AUTOSCALING", "") not in ("", "0")
    try:
        check_fits(space, _node_resources())
    except ConfigError:
        if not autoscaling:
            raise
        _wait_for_a_node(space, log)
    dash = getattr(ctx, "dashboard_url", None)
    if dash:
        log(f"Ray dashboard: http://{dash}")


def _wait_for_a_node(space: SearchSpace, log) -> None:
    """An autoscaling cluster (`ray up`, workers from zero) has no node for a trial yet: ask the
    autoscaler for one trial's bundle and wait until a node holds it (Tune's own pending trials
    keep the nodes up afterwards)."""
    from ray.autoscaler.sdk import request_resources

    wait_s = float(os.environ.get("DNASWEEP_AUTOSCALING_WAIT_S", 900))
    log(f"no node can hold a trial ({bundle(space)}) yet; asking the autoscaler and waiting up to {wait_s:.0f} s")
    request_resources(bundles=[bundle(space)])
    deadline = time.time() + wait_s
    try:
        while True:
            try:
                check_fits(space, _node_resources())
                log("a node that holds a trial is up")
                return
            except ConfigError:
                if time.time() > deadline:
                    raise
            time.sleep(5.0)
    finally:
        request_resources(bundles=[])
