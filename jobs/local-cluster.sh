#!/usr/bin/env bash
# A multi-node Ray cluster on ONE machine, with token authentication, to try the cloud workflow
# (ray job submit, dnasweep run --address, several nodes, a head that runs no trials) locally.
#
#   bash jobs/local-cluster.sh start [N_WORKERS]   head + N worker raylets (default 2), prints how to use it
#   bash jobs/local-cluster.sh add-worker          one more worker raylet (scaling up by hand)
#   bash jobs/local-cluster.sh status              ray status (nodes, resources, pending demands)
#   bash jobs/local-cluster.sh stop                SIGKILL this cluster's processes (only those)
#   bash jobs/local-cluster.sh stop --all          ray stop --force: EVERY Ray process of this user here
#
# Settings (environment): RAY (the ray executable, default: ray on PATH), RAY_PORT (GCS port, 6379),
# HEAD_CPUS (0: like the cloud head, no trials on it), WORKER_CPUS (1 per worker raylet),
# HEAD_RESOURCES / WORKER_RESOURCES (custom Ray resources, JSON; default {"head": 1} / {"worker_node": 1}),
# DASHBOARD_PORT (8265), OBJECT_STORE_BYTES (per node, 500 MB), LOCAL_CLUSTER_DIR (per-node temp
# dirs, /tmp/ray-local-PORT).
#
# Checked on a 2-core / 24 GB machine with Ray 2.60 (see jobs/README.md, "Local trial").
set -euo pipefail

RAY=${RAY:-ray}
PORT=${RAY_PORT:-6379}
HEAD_CPUS=${HEAD_CPUS:-0}
WORKER_CPUS=${WORKER_CPUS:-1}
HEAD_RESOURCES=${HEAD_RESOURCES:-'{"head": 1}'}
WORKER_RESOURCES=${WORKER_RESOURCES:-'{"worker_node": 1}'}
# Every raylet on a host sizes its object store at 30% of RAM by default, as if it had the machine
# to itself: N+1 of them would promise more /dev/shm than there is.
OBJECT_STORE_BYTES=${OBJECT_STORE_BYTES:-500000000}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
DASHBOARD=http://127.0.0.1:$DASHBOARD_PORT
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
  elif [[ -n ${RAY_AUTH_TOKEN_PATH:-} && -s ${RAY_AUTH_TOKEN_PATH} ]]; then
    echo "$RAY_AUTH_TOKEN_PATH"
  elif [[ -s $HOME/.ray/auth_token ]]; then
    echo "$HOME/.ray/auth_token"
  fi
}

ensure_token() {
  if [[ -z $(token_source) ]]; then
    # `ray start` refuses to start in token mode without a token (it never creates one itself);
    # this writes 64 random hex characters to ~/.ray/auth_token. stdout (the token) is discarded
    # so it does not end up in terminal logs.
    "$RAY" get-auth-token --generate >/dev/null
    chmod 600 "$HOME/.ray/auth_token"  # Ray writes it world-readable (0644)
    echo "generated a new Ray auth token in $HOME/.ray/auth_token"
  fi
}

# A TCP port free right now. Ray's fixed defaults (dashboard agent 52365, client server 10001) clash
# with any other Ray on the machine: a head whose agent cannot bind 52365 starts, but every
# `ray job submit` then fails with "No available agent to submit job" (seen here while another
# Ray test run held 52365).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_worker() {
  # Several raylets on one host work in Ray 2.60 (node-manager, object-manager, metrics ports
  # are random by default) given two things: the dashboard agent's HTTP port is fixed at 52365,
  # so a second agent fails to bind ("Agent port #52365 failed to bind after 6 attempts"): each
  # node gets a free one; and the per-node --temp-dir (see LOCAL_CLUSTER_DIR above).
  export "${MARK?}"
  "$RAY" start --address="127.0.0.1:$PORT" --num-cpus="$WORKER_CPUS" --resources="$WORKER_RESOURCES" \
    --dashboard-agent-listen-port="$(free_port)" --object-store-memory="$OBJECT_STORE_BYTES" \
    --disable-usage-stats --temp-dir="$LOCAL_CLUSTER_DIR/w$1"
}

# A worker joining a running cluster: what an autoscaler does when trials wait for resources.
add_worker() {
  ensure_token
  local i=1
  while [[ -e $LOCAL_CLUSTER_DIR/w$i ]]; do i=$((i + 1)); done
  start_worker "$i"
}

start() {
  local n=${1:-2}
  [[ $n =~ ^[0-9]+$ ]] || { echo "N_WORKERS must be a number, got '$n'" >&2; exit 2; }
  ensure_token
  mkdir -p "$LOCAL_CLUSTER_DIR"
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
    --dashboard-agent-listen-port="$(free_port)" --ray-client-server-port="$(free_port)"
  local i
  for ((i = 1; i <= n; i++)); do
    start_worker "$i"
  done
  cat <<EOF

Local Ray cluster: head (CPU $HEAD_CPUS) + $n worker raylet(s) (CPU $WORKER_CPUS each), token auth on.
  dashboard:        $DASHBOARD   (asks for the token: $RAY get-auth-token)
  token:            $(token_source)
  export these in every shell that talks to the cluster:
    export RAY_AUTH_MODE=token
    export RAY_ADDRESS=127.0.0.1:$PORT          # for ray.init() / dnasweep run / ray status
  submit a job:     $RAY job submit --address $DASHBOARD -- python -c "import ray; ray.init(); print(ray.nodes())"
  a sweep (from the repo; --root absolute: the job runs in an unpacked copy of --working-dir):
    $RAY job submit --address $DASHBOARD --working-dir . -- dnasweep run search_spaces/lm.yaml --smoke --root \$PWD/runs/sweeps
  status / stop:    bash jobs/local-cluster.sh status | stop
EOF
}

our_pids() {
  local p pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    # Other users' processes (and ones that just ended) cannot be read: skipped.
    { tr '\0' '\n' <"$p/environ" | grep -qxF "$MARK"; } 2>/dev/null && echo "$pid"
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
  add-worker) add_worker ;;
  status) "$RAY" status --address="127.0.0.1:$PORT" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: bash jobs/local-cluster.sh start [N_WORKERS] | add-worker | status | stop [--all]" >&2; exit 2 ;;
esac
