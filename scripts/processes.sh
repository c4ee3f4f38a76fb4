#!/usr/bin/env bash
# Starts, stops and reports the local web, worker and scheduler processes.
#
# Each process runs in its own session (setsid), so its pid is also its process group id and
# `stop` can reach the children that gunicorn and dramatiq fork. Pids live in .run/<name>.pid,
# output in .run/logs/<name>.log. `start` restarts the processes that are already running, so that
# `BULK_CREDIT_FAIL_USER_IDS=... make up` gives the workers the new environment; it then waits
# until the web process answers GET /healthz. Everything this script prints goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run_dir="$root/.run"
log_dir="$run_dir/logs"
api_url=${API_URL:-http://127.0.0.1:${WALLET_API_PORT:-8088}}
#: Seconds a process gets to exit after TERM before its whole group gets KILL.
stop_timeout_s=10
#: Seconds the web process gets to answer GET /healthz with 200.
health_timeout_s=30
names=(web worker scheduler)
# Every process writes its Prometheus samples here, and the web's /metrics adds them up
# (telemetry/metrics.py); emptied on each start, since the files of dead processes would
# otherwise be counted forever.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$run_dir/metrics}

command_for() {
  case "$1" in
    web) echo ".venv/bin/gunicorn --worker-class gthread --workers ${WEB_WORKERS:-2}" \
      "--threads ${WEB_THREADS:-8} --bind 127.0.0.1:${WALLET_API_PORT:-8088} 'api:create_app()'" ;;
    worker) echo ".venv/bin/dramatiq actors --processes ${WORKER_PROCESSES:-2} --threads ${WORKER_THREADS:-1}" ;;
    scheduler) echo ".venv/bin/python -m jobs" ;;
  esac
}

log() { echo "processes: $*" >&2; }

# Prints the pid of a running process, or fails. A pid is trusted only while its process
# group exists, so a stale pid file left by a crash or a reboot reads as "not running".
running_pid() {
  local pid
  pid=$(cat "$run_dir/$1.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null && echo "$pid"
}

# Stops the named processes together: TERM to each leader lets gunicorn and dramatiq shut their
# children down gracefully; KILL to each group afterwards catches whatever did not exit in time.
stop() {
  local name pid entry pids=() deadline=$((SECONDS + stop_timeout_s))
  for name in "$@"; do
    if pid=$(running_pid "$name"); then kill -TERM "$pid" 2>/dev/null || true; pids+=("$name:$pid"); fi
  done
  for entry in ${pids[@]+"${pids[@]}"}; do
    name=${entry%%:*}; pid=${entry##*:}
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "$name (pid $pid) still running after ${stop_timeout_s} s, sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    log "$name stopped (pid $pid)"
  done
  for name in "$@"; do rm -f "$run_dir/$name.pid"; done
}

start_one() {
  local name=$1 command
  command=$(command_for "$name")
  echo "=== $(date -u +%FT%TZ) starting: $command" >> "$log_dir/$name.log"
  # The inner shell records its own pid after setsid and then becomes the command (exec),
  # so the pid file names the process group leader whatever setsid had to do. Only the
  # redirected command goes to the background: nothing may keep the caller's stdout open,
  # or `make up | grep =` would never see end of file.
  setsid bash -c 'echo $$ > "$1"; eval "exec $2"' _ "$run_dir/$name.pid" "$command" \
    < /dev/null >> "$log_dir/$name.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$run_dir/$name.pid" ] && break; sleep 0.1; done
  [ -s "$run_dir/$name.pid" ] || { log "$name did not start, see .run/logs/$name.log"; return 1; }
  log "$name started (pid $(cat "$run_dir/$name.pid")), log in .run/logs/$name.log"
}

# Empties the metrics folder once every process is stopped. Only *.db files are removed, so a
# PROMETHEUS_MULTIPROC_DIR pointed at the wrong folder loses nothing else.
reset_metrics() {
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -type f -name '*.db' -delete
}

wait_healthy() {
  local deadline=$((SECONDS + health_timeout_s))
  while ((SECONDS < deadline)); do
    if "$root/.venv/bin/python" - "$api_url/healthz" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
    running_pid web >/dev/null || break
    sleep 0.5
  done
  log "web did not answer $api_url/healthz with 200 within ${health_timeout_s} s; last lines of its log:"
  tail -n 40 "$log_dir/web.log" >&2 || true
  return 1
}

status() {
  local name pid state=0
  for name in "${names[@]}"; do
    if pid=$(running_pid "$name"); then log "$name running (pid $pid)"; else log "$name stopped"; state=3; fi
  done
  return $state
}

cd "$root"
mkdir -p "$log_dir"
case "${1:-}" in
  start) stop "${names[@]}"; reset_metrics; for name in "${names[@]}"; do start_one "$name"; done; wait_healthy ;;
  stop) stop "${names[@]}" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
