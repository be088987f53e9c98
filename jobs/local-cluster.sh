#!/usr/bin/env bash
# A multi-node Ray cluster on ONE machine, with token authentication, to try the cloud workflow
# (ray job submit, dnasweep run --address, several nodes, a head that runs no trials) locally.
#
#   bash jobs/local-cluster.sh start [N_WORKERS]   head + N worker raylets (default 2), prints how to use it
#   bash jobs/local-cluster.sh token               create the token if there is none (mode 600), say where it is
#   bash jobs/local-cluster.sh add-worker          one more worker raylet (scaling up by hand)
#   bash jobs/local-cluster.sh status              ray status (nodes, resources, pending demands)
#   bash jobs/local-cluster.sh stop                SIGKILL this cluster's processes (only those)
#   bash jobs/local-cluster.sh stop --all          ray stop --force: EVERY Ray process of this user here
#
# Settings (environment): RAY (the ray executable, default: ray on PATH), RAY_PORT (GCS port, 6379),
# HEAD_CPUS (0: like the cloud head, no trials on it), WORKER_CPUS (1 per worker raylet),
# HEAD_RESOURCES / WORKER_RESOURCES (custom Ray resources, JSON; default {"head": 1} / {"worker_node": 1}),
# DASHBOARD_PORT (8265), OBJECT_STORE_BYTES (per node, 500 MB), LOCAL_CLUSTER_DIR (per-node temp
# dirs, /tmp/ray-local-PORT), PORT_WAIT_S (how long `start` waits for each port to be bound, 60).
#
# Ports: a default port (RAY_PORT or DASHBOARD_PORT unset) that another process holds is replaced by
# a free one, and the summary prints the ports in use; a port you set that is taken ends `start` with
# exit code 2, naming it, before anything starts. After `ray start`, every port the script chose (GCS,
# dashboard, client server, each node's dashboard agent) must be held by a process of THIS cluster:
# Ray only logs a failed bind ("Failed to bind to 127.0.0.1:8265") and exits 0, and a dashboard URL
# that points at another cluster sharing the token would accept our jobs. If one is not, `start`
# stops what it started and exits 1, naming the port and what holds it.
#
# Checked on a 2-core / 24 GB machine with Ray 2.60 (see jobs/README.md, "Local trial").
set -euo pipefail

RAY=${RAY:-ray}
PORT_SET=${RAY_PORT:+1}  # set by the user: never replaced, refused when taken
DASHBOARD_PORT_SET=${DASHBOARD_PORT:+1}
LOCAL_CLUSTER_DIR_SET=${LOCAL_CLUSTER_DIR:+1}
PORT=${RAY_PORT:-6379}
HEAD_CPUS=${HEAD_CPUS:-0}
WORKER_CPUS=${WORKER_CPUS:-1}
HEAD_RESOURCES=${HEAD_RESOURCES:-'{"head": 1}'}
WORKER_RESOURCES=${WORKER_RESOURCES:-'{"worker_node": 1}'}
# Every raylet on a host sizes its object store at 30% of RAM by default, as if it had the machine
# to itself: N+1 of them would promise more /dev/shm than there is.
OBJECT_STORE_BYTES=${OBJECT_STORE_BYTES:-500000000}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
PORT_WAIT_S=${PORT_WAIT_S:-60}
# One temp dir per node (head/, w1/, w2/, ...) instead of the shared /tmp/ray. Raylets on one host
# otherwise share SESSION/runtime_resources: each node's runtime-env agent unpacks a job's
# --working-dir into the same folder, and the first agent whose reference drops deletes it under
# the others (seen with Ray 2.60: the job driver died in os.getcwd() 4 s after it started). It also
# keeps this cluster out of /tmp/ray/ray_current_cluster, so `ray.init("auto")` elsewhere on a shared
# machine does not join it by accident. Keep it short: Unix socket paths are limited to 107 bytes.
LOCAL_CLUSTER_DIR=${LOCAL_CLUSTER_DIR:-/tmp/ray-local-$PORT}
# Every process of this cluster (GCS, raylets, agents, workers, job drivers) inherits this variable
# from `ray start`; `stop` finds them by it, so it never touches other Ray clusters on the machine.
MARK=DNASWEEP_LOCAL_CLUSTER=$LOCAL_CLUSTER_DIR

# Token auth on for every process started below (ray start, the raylets, their workers and job
# drivers inherit it). Ray 2.60 reads the token from, in order: $RAY_AUTH_TOKEN, the file named by
# $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. `ray start --head` only auto-enables token auth when a
# token already exists and a worker's `ray start --address` never does, so we set it explicitly.
export RAY_AUTH_MODE=token

token_source() {
  if [[ -n ${RAY_AUTH_TOKEN:-} ]]; then
    echo "\$RAY_AUTH_TOKEN"
  elif [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then
    # Ray reads only this file when the variable is set (missing or empty: it refuses to start).
    [[ ! -s $RAY_AUTH_TOKEN_PATH ]] || echo "$RAY_AUTH_TOKEN_PATH"
  elif [[ -s $HOME/.ray/auth_token ]]; then
    echo "$HOME/.ray/auth_token"
  fi
}

ensure_token() {
  [[ -z $(token_source) ]] || return 0
  # `ray start` refuses to start in token mode without a token (it never creates one itself).
  # umask 077: the file is created with mode 600 (Ray's own writer makes it 644, readable by every
  # user of the machine); the token printed on stdout is discarded, so it stays out of terminal logs.
  if [[ -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then
    # The file RAY_AUTH_TOKEN_PATH names is missing or empty; Ray reads that one, never
    # ~/.ray/auth_token, so the token goes there: 64 random hex characters, like Ray's.
    (umask 077 && mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")" &&
      python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$RAY_AUTH_TOKEN_PATH")
    chmod 600 "$RAY_AUTH_TOKEN_PATH"  # an empty file that was already there keeps its mode otherwise
    echo "generated a new Ray auth token in $RAY_AUTH_TOKEN_PATH (mode 600)"
  else
    (umask 077 && "$RAY" get-auth-token --generate >/dev/null)
    chmod 600 "$HOME/.ray/auth_token"
    echo "generated a new Ray auth token in $HOME/.ray/auth_token (mode 600)"
  fi
}

# A TCP port free right now. Ray's fixed defaults (dashboard agent 52365, client server 10001) clash
# with any other Ray on the machine: a head whose agent cannot bind 52365 starts, but every
# `ray job submit` then fails with "No available agent to submit job" (seen here while another
# Ray test run held 52365).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether nobody listens on TCP port $1 (on any address) right now.
port_is_free() {
  python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# The port to use for the setting $1 (RAY_PORT / DASHBOARD_PORT), now $2, set by the user when $3 is
# not empty: kept when free; a default one that is taken is replaced by a free one (a note says so);
# one the user set that is taken ends the script with exit code 2, before anything starts.
choose_port() {
  local var=$1 port=$2 set_by_user=$3
  if port_is_free "$port"; then
    echo "$port"
  elif [[ -n $set_by_user ]]; then
    echo "error: $var=$port is taken by another process (another Ray cluster?); nothing was started." \
      "Pick a free port, e.g. $var=$(free_port) bash jobs/local-cluster.sh start" >&2
    exit 2
  else
    port=$(free_port)
    echo "note: the default $var is taken by another process (another Ray cluster?); this cluster uses $port" >&2
    echo "$port"
  fi
}

# NAME=PORT ...: wait (up to PORT_WAIT_S) until a process of this cluster listens on each port and no
# other process does; otherwise say what holds (or misses) each one and fail. Listening sockets come
# from /proc/net/tcp{,6}, their processes from /proc/PID/fd, "this cluster" from the MARK variable
# that every process of it inherits.
ports_are_ours() {
  MARK_LINE=$MARK WAIT_S=$PORT_WAIT_S python3 - "$@" <<'PY'
import os
import sys
import time

mark = os.environ["MARK_LINE"].encode()
want = {int(a.rsplit("=", 1)[1]): a.rsplit("=", 1)[0] for a in sys.argv[1:]}


def is_ours(pid):
    """A process with MARK in its environment, or a descendant of one: Ray's Python processes
    (ray::DashboardAgent, ...) rename themselves with setproctitle, which overwrites the memory
    /proc/PID/environ shows; their raylet keeps it."""
    while pid not in ("0", "1"):
        try:
            if mark in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                return True
            pid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            return False
    return False


def holders():
    """port -> {(pid or None, ours)} of the processes listening on it."""
    inode_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            port = int(f[1].rsplit(":", 1)[1], 16)
            if f[3] == "0A" and port in want:  # 0A: LISTEN
                inode_port[f[9]] = port
    held = {p: set() for p in want}
    seen = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = link[8:-1] if link.startswith("socket:[") else None
            if inode in inode_port:
                held[inode_port[inode]].add((int(pid), is_ours(pid)))
                seen.add(inode)
    for inode, port in inode_port.items():
        if inode not in seen:  # a socket of a process we may not look into (another user's)
            held[port].add((None, False))
    return held


def who(pid):
    if pid is None:
        return "a process of another user"
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"pid {pid} ({cmd[:100]})"


deadline = time.time() + float(os.environ["WAIT_S"])
while True:
    held = holders()
    foreign = {p: [pid for pid, ours in hs if not ours] for p, hs in held.items()}
    missing = {p for p, hs in held.items() if not any(ours for _, ours in hs)}
    # A port another process holds is final (Ray logged a failed bind and went on); one nobody
    # holds yet may still come (a dashboard agent binds a few seconds after `ray start` returns).
    if any(foreign.values()) or not missing or time.time() > deadline:
        break
    time.sleep(0.5)
bad = False
for p, name in want.items():
    if foreign[p]:
        bad = True
        print(f"error: port {p} ({name}) is held by another process, {who(foreign[p][0])}: this cluster's "
              f"{name} could not bind it", file=sys.stderr)
    elif p in missing:
        bad = True
        print(f"error: no process of this cluster listens on port {p} ({name}) after {os.environ['WAIT_S']} s; "
              "see the node's logs under LOCAL_CLUSTER_DIR", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

start_worker() {
  # Several raylets on one host work in Ray 2.60 (node-manager, object-manager, metrics ports
  # are random by default) given two things: the dashboard agent's HTTP port is fixed at 52365,
  # so a second agent fails to bind ("Agent port #52365 failed to bind after 6 attempts"): each
  # node gets a free one (checked below); and the per-node --temp-dir (see LOCAL_CLUSTER_DIR above).
  export "${MARK?}"
  local agent
  agent=$(free_port)
  "$RAY" start --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --resources="$WORKER_RESOURCES" \
    --dashboard-agent-listen-port="$agent" --object-store-memory="$OBJECT_STORE_BYTES" \
    --disable-usage-stats --temp-dir="$LOCAL_CLUSTER_DIR/w$1"
  ports_are_ours "worker w$1 dashboard agent=$agent"
}

# EXIT trap of start / add-worker: one that failed half-way (a port taken, a `ray start` that
# failed) leaves nothing running; $1: "all" (start) or the temp dir name of the new worker.
STARTED=1
stop_on_failure() {
  [[ $STARTED == 1 ]] && return 0
  local pids
  if [[ $1 == all ]]; then
    pids=$(our_pids)
  else
    pids=$(our_pids "$LOCAL_CLUSTER_DIR/$1/")
  fi
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    echo "start failed: stopped the $(wc -w <<<"$pids") processes it had started" >&2
  fi
}

# A worker joining a running cluster: what an autoscaler does when trials wait for resources.
add_worker() {
  ensure_token
  local i=1
  while [[ -e $LOCAL_CLUSTER_DIR/w$i ]]; do i=$((i + 1)); done
  STARTED=0
  trap "stop_on_failure w$i" EXIT
  start_worker "$i"
  STARTED=1
}

start() {
  local n=${1:-2}
  [[ $n =~ ^[0-9]+$ ]] || { echo "N_WORKERS must be a number, got '$n'" >&2; exit 2; }
  if [[ -n $(our_pids) ]]; then
    echo "error: a local cluster already runs in $LOCAL_CLUSTER_DIR (RAY_PORT=$PORT); stop it first:" \
      "bash jobs/local-cluster.sh stop" >&2
    exit 2
  fi
  PORT=$(choose_port RAY_PORT "$PORT" "$PORT_SET")
  if [[ -z $LOCAL_CLUSTER_DIR_SET ]]; then
    LOCAL_CLUSTER_DIR=/tmp/ray-local-$PORT
    MARK=DNASWEEP_LOCAL_CLUSTER=$LOCAL_CLUSTER_DIR
  fi
  DASHBOARD_PORT=$(choose_port DASHBOARD_PORT "$DASHBOARD_PORT" "$DASHBOARD_PORT_SET")
  local dashboard=http://127.0.0.1:$DASHBOARD_PORT agent client
  agent=$(free_port)
  client=$(free_port)
  ensure_token
  mkdir -p "$LOCAL_CLUSTER_DIR"
  STARTED=0
  trap 'stop_on_failure all' EXIT
  export "${MARK?}"
  # --dashboard-host=127.0.0.1: the dashboard (and its job-submission API, which runs arbitrary
  #   code) is reachable from this machine only. The GCS port itself listens on all interfaces,
  #   which is why token auth is on.
  # --num-cpus=$HEAD_CPUS (0): trials are never scheduled on the head, as on the cloud clusters;
  #   job drivers (dnasweep run) still run there, they ask for no CPU.
  # --resources head: lets a task pin itself to the head ({"head": 0.01}) if ever needed.
  # --disable-usage-stats: no usage report leaves a development machine.
  "$RAY" start --head --port="$PORT" --dashboard-host=127.0.0.1 --num-cpus="$HEAD_CPUS" \
    --dashboard-port="$DASHBOARD_PORT" --resources="$HEAD_RESOURCES" --object-store-memory="$OBJECT_STORE_BYTES" \
    --disable-usage-stats --temp-dir="$LOCAL_CLUSTER_DIR/head" \
    --dashboard-agent-listen-port="$agent" --ray-client-server-port="$client"
  # `ray start` exits 0 when a port could not be bound (it only logs it): check each one.
  ports_are_ours "GCS=$PORT" "dashboard=$DASHBOARD_PORT" "head dashboard agent=$agent" "client server=$client"
  local i
  for ((i = 1; i <= n; i++)); do
    start_worker "$i"
  done
  STARTED=1
  local again=""  # what status / stop need to find this cluster again
  [[ -n $PORT_SET || -n $LOCAL_CLUSTER_DIR_SET || $PORT == 6379 ]] || again="RAY_PORT=$PORT "
  cat <<EOF

Local Ray cluster: head (CPU $HEAD_CPUS) + $n worker raylet(s) (CPU $WORKER_CPUS each), token auth on.
  dashboard:        $dashboard   (asks for the token: $RAY get-auth-token)
  token:            $(token_source)
  export these in every shell that talks to the cluster:
    export RAY_AUTH_MODE=token
    export RAY_ADDRESS=127.0.0.1:$PORT          # for ray.init() / dnasweep run / ray status
  submit a job:     $RAY job submit --address $dashboard -- python -c "import ray; ray.init(); print(ray.nodes())"
  a sweep (from the repo; --root absolute: the job runs in an unpacked copy of --working-dir):
    $RAY job submit --address $dashboard --working-dir . -- dnasweep run search_spaces/lm.yaml --smoke --root \$PWD/runs/sweeps
  status / stop:    ${again}bash jobs/local-cluster.sh status | stop
EOF
}

# PIDs of this cluster's processes; with $1 (a node's temp dir), only those started for that node.
our_pids() {
  local p pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    # Other users' processes (and ones that just ended) cannot be read: skipped.
    { tr '\0' '\n' <"$p/environ" | grep -qxF "$MARK"; } 2>/dev/null || continue
    [[ -z ${1:-} ]] || { tr '\0' ' ' <"$p/cmdline" | grep -qF -- "$1"; } 2>/dev/null || continue
    echo "$pid"
  done
  return 0
}

stop() {
  if [[ ${1:-} == --all ]]; then
    # Stops EVERY Ray process of this user on the machine, other clusters and test runs included.
    exec "$RAY" stop --force
  fi
  [[ -d /proc ]] || { echo "no /proc here: use 'stop --all' (ray stop --force)" >&2; exit 2; }
  local pids
  pids=$(our_pids)
  [[ -n $pids ]] || { echo "no process of the local cluster in $LOCAL_CLUSTER_DIR is running"; return 0; }
  # SIGKILL at once, as `ray stop --force` does, but only to this cluster's processes (workers and
  # job drivers included, so nothing is orphaned).
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 1
  local left
  left=$(our_pids)
  echo "stopped $(wc -w <<<"$pids") processes of the local cluster ($LOCAL_CLUSTER_DIR)${left:+; still running: $left}"
  [[ -z $left ]]
}

case ${1:-} in
  start) start "${2:-2}" ;;
  token) ensure_token && echo "token: $(token_source)" ;;
  add-worker) add_worker ;;
  status) "$RAY" status --address="127.0.0.1:$PORT" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: bash jobs/local-cluster.sh start [N_WORKERS] | token | add-worker | status | stop [--all]" >&2; exit 2 ;;
esac
