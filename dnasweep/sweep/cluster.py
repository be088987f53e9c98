"""Which Ray cluster a sweep runs on, and whether one trial fits on one of its nodes.

Owns: joining or starting the cluster (a dead cluster recorded by `ray start` is not waited on),
the per-trial resource bundle in Ray's names, the fit check (one node must hold a whole trial;
cluster totals can hide that none does), and the autoscaling wait.
"""

from __future__ import annotations

import os
import time

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


def init_ray(space: SearchSpace, address: str | None, log, autoscaling: bool | None = None) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or _stale_cluster_guard(log)
    # The dashboard of a cluster we start binds to 127.0.0.1 only (ssh -L 8265 to watch it remotely).
    ctx = ray.init(address=address, ignore_reinit_error=True, include_dashboard=address in (None, "local"),
                   dashboard_host="127.0.0.1", log_to_driver=False)
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


def _stale_cluster_guard(log) -> str | None:
    """With no address, ray.init joins the cluster `ray start` recorded in /tmp/ray/ray_current_cluster;
    if that cluster died without `ray stop` (SIGKILL, reboot), it waits on it for minutes. A dead
    one is reported and a local cluster started instead ("local"); a live one is joined (None)."""
    import socket
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(path) as f:
            host, port = f.read().strip().rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
        return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log(f"warning: {path} names a Ray cluster that does not answer (stopped without `ray stop`?); "
            "starting a local one instead (pass --address to join a cluster)")
        return "local"


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
