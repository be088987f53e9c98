"""The cloud cluster configs (jobs/aws.yaml, jobs/gcp.yaml) checked offline: Ray's own cluster-config
schema, as `ray up` applies it before it talks to the cloud, plus what the schema cannot see (scale
from zero, GPU resources that match the machine, a head that runs no trials, token auth on every
`ray start`, MLflow never on 0.0.0.0, the repository and the token mounted, the sweeps kept in the
bucket by dnasweep itself with the autoscaling wait on, no FUSE mount). Nothing here starts Ray or
contacts AWS / GCP; the cloud side itself is untested (no cloud access from the dev machine)."""

import copy
import pathlib
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import ray
import yaml
from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR, _get_default_token_path
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
CONFIGS = ["aws", "gcp"]

# The machines each config may use: (vCPUs, GPUs) as sold. Declared resources above them would let
# Ray schedule trials that cannot run; below them would waste what is paid for.
MACHINES = {
    "m6i.xlarge": (4, 0),
    "g5.xlarge": (4, 1),  # 1 x A10G
    "p4d.24xlarge": (96, 8),  # 8 x A100 40 GB
    "n2-standard-4": (4, 0),
    "g2-standard-8": (8, 1),  # 1 x L4
    "a2-highgpu-8g": (96, 8),  # 8 x A100 40 GB
}
# Placeholders the user must replace (each config's header lists them).
PLACEHOLDERS = {"aws": ["BUCKET", "ACCOUNT_ID", "AMI_ID"], "gcp": ["PROJECT_ID", "BUCKET", "DLVM_IMAGE_FAMILY"]}
BUCKET_SCHEME = {"aws": "s3://", "gcp": "gs://"}
COMMAND_LISTS = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands"]


def load(name: str) -> dict:
    with open(JOBS / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def machine(node_config: dict) -> str:
    return node_config.get("InstanceType") or node_config["machineType"]


def workers(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def ray_start_commands(cfg: dict, key: str) -> list[str]:
    cmds = [c for c in cfg[key] if re.search(r"\bray start\b", c)]
    assert cmds, f"{key} has no `ray start`"
    return cmds


def option(cmd: str, name: str) -> str | None:
    """Value of --name=VALUE or --name VALUE in a shell command (first occurrence)."""
    words = shlex.split(cmd)
    for i, w in enumerate(words):
        if w.startswith(f"{name}="):
            return w.split("=", 1)[1]
        if w == name and i + 1 < len(words):
            return words[i + 1]
    return None


@pytest.mark.parametrize("name", CONFIGS)
def test_valid_for_ray_up(name):
    """What `ray up` does before it contacts the cloud (commands._bootstrap_config): merge the
    provider's defaults, then validate against ray/autoscaler/ray-schema.json and Ray's own checks."""
    prepared = prepare_config(copy.deepcopy(load(name)))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_workers_scale_from_zero_within_the_cap(name):
    cfg = load(name)
    ws = workers(cfg)
    assert ws
    for node_type, nt in ws.items():
        # Explicit, not Ray's default of 0: the config says what it means.
        assert nt.get("min_workers") == 0, f"{node_type}: min_workers must be 0 (nothing bills while idle)"
        assert 1 <= nt["max_workers"] <= cfg["max_workers"], node_type


@pytest.mark.parametrize("name", CONFIGS)
def test_gpu_types_declare_what_the_machine_has(name):
    cfg = load(name)
    gpu_counts = set()
    for node_type, nt in workers(cfg).items():
        cpus, gpus = MACHINES[machine(nt["node_config"])]
        assert gpus >= 1, f"{node_type}: {machine(nt['node_config'])} has no GPU"
        assert nt["resources"] == {"CPU": cpus, "GPU": gpus}, node_type
        gpu_counts.add(gpus)
    assert {1, 8} <= gpu_counts, "want a 1-GPU and an 8-GPU worker type"


@pytest.mark.parametrize("name", CONFIGS)
def test_a_spot_variant_of_the_one_gpu_type(name):
    cfg = load(name)

    def is_spot(nc):
        sched = nc.get("scheduling") or {}
        return (nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
                or sched.get("provisioningModel") == "SPOT" or sched.get("preemptible") is True)

    ws = workers(cfg)
    spot = [machine(nt["node_config"]) for nt in ws.values() if is_spot(nt["node_config"])]
    on_demand = [machine(nt["node_config"]) for nt in ws.values() if not is_spot(nt["node_config"])]
    one_gpu = [m for m in on_demand if MACHINES[m][1] == 1]
    assert one_gpu and set(one_gpu) <= set(spot), (spot, on_demand)


@pytest.mark.parametrize("name", CONFIGS)
def test_head_runs_no_trials(name):
    cfg = load(name)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert MACHINES[machine(head["node_config"])][1] == 0, "the head needs no GPU"
    (start,) = ray_start_commands(cfg, "head_start_ray_commands")
    assert option(start, "--num-cpus") == "0"


@pytest.mark.parametrize("name", CONFIGS)
def test_token_auth_on_every_ray_start(name):
    """Ray 2.60 (the installed one) names the variable RAY_AUTH_MODE; a worker's `ray start` never
    turns token auth on by itself, so each start command must set it."""
    assert AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"
    cfg = load(name)
    for key in ["head_start_ray_commands", "worker_start_ray_commands"]:
        for cmd in ray_start_commands(cfg, key):
            before = cmd[: cmd.index("ray start")]
            assert "RAY_AUTH_MODE=token ray start" in cmd or re.search(r"\bexport RAY_AUTH_MODE=token\b", before), cmd


@pytest.mark.parametrize("name", CONFIGS)
def test_token_file_reaches_every_node(name):
    """file_mounts go to the head and from the head to every worker; the token must land where the
    installed Ray looks for it when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    mounts = load(name)["file_mounts"]
    token = [remote for remote in mounts if remote.endswith("auth_token")]
    assert token == ["~/.ray/auth_token"]
    home = pathlib.Path.home()
    assert _get_default_token_path() == home / ".ray" / "auth_token"
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"  # the submitting machine's own token


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_only_through_the_tunnel(name):
    cfg = load(name)
    (start,) = ray_start_commands(cfg, "head_start_ray_commands")
    assert option(start, "--dashboard-host") == "127.0.0.1"
    # Without it the head starts no autoscaler and the GPU workers never come.
    assert option(start, "--autoscaling-config") == "~/ray_bootstrap_config.yaml"
    everything = yaml.safe_dump(cfg)
    assert "0.0.0.0" not in everything


@pytest.mark.parametrize("name", CONFIGS)
def test_mlflow_server_on_the_head_internal_address(name):
    cfg = load(name)
    servers = [c for c in cfg["head_start_ray_commands"] + cfg["head_setup_commands"] if "mlflow server" in c]
    assert len(servers) == 1, servers
    cmd = servers[0]
    host = option(cmd, "--host")
    assert host and host not in ("0.0.0.0", "::", "[::]"), host
    assert "hostname -I" in host  # the node's private address, found when it starts
    assert "nohup" in cmd and option(cmd, "--port") == "5000"
    from dnasweep.sweep.ui import MLFLOW_UI_ENV  # as `dnasweep ui` starts it: no job runner (huey consumers)
    assert all(f"{k}={v} nohup mlflow server" in cmd for k, v in MLFLOW_UI_ENV.items()), cmd
    assert option(cmd, "--backend-store-uri").startswith("sqlite:////home/")
    assert option(cmd, "--artifacts-destination") == f"{BUCKET_SCHEME[name]}BUCKET/mlflow"
    # The job drivers (on the head) find it through MLFLOW_TRACKING_URI.
    exported = [c for c in cfg["head_setup_commands"] if "MLFLOW_TRACKING_URI=" in c]
    assert exported and ":5000" in exported[0]


def env_of_ray_start(cmd: str) -> dict[str, str]:
    """The VAR=VALUE words that prefix `ray start` in a shell command: the environment of that
    process (and of everything it starts) on top of the login shell's."""
    simple = cmd[: cmd.index("ray start")].split(";")[-1]  # the simple command that runs ray start
    words = shlex.split(simple)
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w) for w in words), simple
    return dict(w.split("=", 1) for w in words)


def test_dnasweep_reads_the_variables_the_configs_set():
    """The names below are dnasweep's (--storage / --autoscaling defaults); a rename there must show
    up here, or the cluster would silently run without them."""
    sweep = "".join(p.read_text() for p in (ROOT / "dnasweep" / "sweep").glob("*.py"))
    for var in ("DNASWEEP_STORAGE", "DNASWEEP_AUTOSCALING"):
        assert f'os.environ.get("{var}"' in sweep, var


@pytest.mark.parametrize("name", CONFIGS)
def test_sweeps_go_to_the_bucket_and_wait_for_nodes(name):
    """Every job driver runs on the head and inherits the environment of its `ray start` (Ray's job
    supervisor copies its own): the sweep goes to the bucket without a mount, and a sweep submitted
    while no worker is up asks the autoscaler for one instead of being refused."""
    cfg = load(name)
    (start,) = ray_start_commands(cfg, "head_start_ray_commands")
    env = env_of_ray_start(start)
    assert env.get("RAY_AUTH_MODE") == "token"
    assert env.get("DNASWEEP_STORAGE") == f"{BUCKET_SCHEME[name]}BUCKET/sweeps", env
    assert env.get("DNASWEEP_AUTOSCALING") == "1", env
    # the same bucket as MLflow's artifacts, and a prefix of its own
    mlflow = next(c for c in cfg["head_start_ray_commands"] if "mlflow server" in c)
    assert option(mlflow, "--artifacts-destination").rsplit("/", 1)[0] == env["DNASWEEP_STORAGE"].rsplit("/", 1)[0]
    # Workers run trials only; the driver hands them the store, they need no variable of their own.
    for cmd in ray_start_commands(cfg, "worker_start_ray_commands"):
        assert "DNASWEEP_" not in cmd
    # The documented submit command keeps the driver's working copy at an absolute path on the head
    # (a relative one would land in the job's temporary copy of --working-dir).
    header = (JOBS / f"{name}.yaml").read_text().split("\ncluster_name:", 1)[0]
    root = option(re.search(r"dnasweep run .*", header).group(0), "--root")
    assert root and root.startswith(f"/home/{cfg['auth']['ssh_user']}/"), root


@pytest.mark.parametrize("name", CONFIGS)
def test_no_fuse_mount(name):
    """dnasweep reaches the bucket through pyarrow; a FUSE mount (s3fs, gcsfuse, Mountpoint) would be
    a second, slower path to the same objects and one more thing to install."""
    cfg = load(name)
    commands = "\n".join(c for key in COMMAND_LISTS for c in cfg.get(key) or [])
    for word in ("s3fs", "gcsfuse", "mount-s3", "mountpoint", "/mnt/"):
        assert word not in commands, word
    assert not any(remote.startswith("/mnt") for remote in cfg["file_mounts"])
    assert "/mnt/dnasweep" not in (JOBS / f"{name}.yaml").read_text()
    assert "/mnt/dnasweep" not in (JOBS / "README.md").read_text()


@pytest.mark.parametrize("name", CONFIGS)
def test_repository_is_mounted_and_installed(name):
    cfg = load(name)
    mounts = cfg["file_mounts"]
    repo = {remote: local for remote, local in mounts.items() if remote.startswith("~/dnasweep/")}
    for remote, local in repo.items():
        assert (ROOT / local).exists(), f"{remote}: {local} does not exist in the repository"
        assert remote == f"~/dnasweep/{local}", "the repository's layout, kept"
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    # what `pip install -e ~/dnasweep` reads, and what `dnasweep run search_spaces/...` needs
    assert {"pyproject.toml", readme, "dnasweep", "search_spaces"} <= set(repo.values())
    setup = cfg["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if re.search(r"pip install torch==\d", c))
    install_at = next(i for i, c in enumerate(setup) if re.search(r"pip install -e .*dnasweep\[sweep\]", c))
    assert torch_at < install_at, "pinned torch first, or dnasweep's torch>=2.6 pulls the newest"
    ci_torch = re.search(r"torch==[\d.]+", (ROOT / ".ci" / "setup").read_text())
    assert ci_torch and ci_torch.group(0) in setup[torch_at], "the same torch as CI"


def test_both_clouds_pin_the_same_ray():
    pins = {name: {m for c in load(name)["setup_commands"] for m in re.findall(r"ray\[[a-z,]+\]==([\d.]+)", c)}
            for name in CONFIGS}
    assert pins["aws"] == pins["gcp"] and len(pins["aws"]) == 1, pins
    floor = re.search(r'"ray\[[a-z,]+\]>=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    (pin,) = pins["aws"]
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert version(pin) >= version(floor.group(1))
    assert version(ray.__version__)[:2] >= version(floor.group(1))[:2]


@pytest.mark.parametrize("name", CONFIGS)
def test_placeholders_documented_and_used(name):
    text = (JOBS / f"{name}.yaml").read_text()
    header, body = text.split("\ncluster_name:", 1)
    for p in PLACEHOLDERS[name]:
        assert re.search(rf"^#\s+{p}\s", header, re.M), f"{p} not explained in the header"
        assert p in body, f"{p} documented but unused"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is what runs these commands on the nodes")
@pytest.mark.parametrize("name", CONFIGS)
def test_commands_are_valid_bash(name):
    cfg = load(name)
    for key in COMMAND_LISTS:
        for cmd in cfg.get(key) or []:
            r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert r.returncode == 0, f"{key}: {cmd}\n{r.stderr}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is bash")
def test_local_cluster_script():
    script = JOBS / "local-cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "export RAY_AUTH_MODE=token" in text and "get-auth-token --generate" in text
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start [N_WORKERS]" in usage.stderr
