#!/usr/bin/env bash
# Starts, stops and reports the local web, worker and scheduler processes, under supervisord.
#
# supervisord (scripts/supervisord.conf) starts the three and restarts whichever dies: a
# gunicorn master, a Dramatiq main process (which exits when one of its worker processes dies)
# or the scheduler. Its pid lives in $WALLET_RUN_DIR/supervisord.pid, its control socket next
# to it, output in $WALLET_RUN_DIR/logs/<name>.log; WALLET_RUN_DIR defaults to .run. `stop`
# stops supervisord, which stops each program's whole process group first. `start` restarts
# everything, so that `BULK_CREDIT_FAIL_USER_IDS=... make up` gives the workers the new
# environment; it then waits until the web process answers GET /healthz. Everything this
# script prints goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export WALLET_ROOT=$root
export WALLET_RUN_DIR=${WALLET_RUN_DIR:-$root/.run}
run_dir=$WALLET_RUN_DIR
log_dir="$run_dir/logs"
export WALLET_API_PORT=${WALLET_API_PORT:-8088}
export WEB_WORKERS=${WEB_WORKERS:-2} WEB_THREADS=${WEB_THREADS:-8}
export WORKER_PROCESSES=${WORKER_PROCESSES:-2} WORKER_THREADS=${WORKER_THREADS:-1}
api_url=${API_URL:-http://127.0.0.1:$WALLET_API_PORT}
config="$root/scripts/supervisord.conf"
#: Seconds supervisord gets to stop every program (the worker's stopwaitsecs, plus a margin)
#: before what is left of it gets KILL.
stop_timeout_s=60
#: Seconds the web process gets to answer GET /healthz with 200 (it took 31 s once on a 2-core
#: machine at load 11, while a test suite ran beside it).
health_timeout_s=90
#: The processes that scripts/processes.sh started itself before supervisord did (pid files).
legacy_names=(web worker scheduler)
# Every process writes its Prometheus samples here, and the web's /metrics adds them up
# (telemetry/metrics.py); emptied on each start, since the files of dead processes would
# otherwise be counted forever.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$run_dir/metrics}

log() { echo "processes: $*" >&2; }

# Prints the pid of a running process group whose leader's pid is in the file, or fails. A pid
# is trusted only while its group exists, so a stale pid file left by a crash reads as "not running".
running_group() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null && echo "$pid"
}

ctl() { "$root/.venv/bin/supervisorctl" -c "$config" "$@"; }

# TERM to supervisord stops every program (each process group: TERM, KILL after its stopwaitsecs),
# then supervisord itself. Whatever is left after stop_timeout_s gets KILL, group by group.
stop() {
  local pid child_pids deadline=$((SECONDS + stop_timeout_s))
  if pid=$(running_group "$run_dir/supervisord.pid"); then
    child_pids=$(ctl pid all 2>/dev/null | grep -E '^[0-9]+$' | grep -v '^0$' || true)
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    for child in $child_pids "$pid"; do
      if kill -0 -- "-$child" 2>/dev/null; then
        log "process group $child still running after ${stop_timeout_s} s, sending KILL"
        kill -KILL -- "-$child" 2>/dev/null || true
      fi
    done
    log "supervisord and its programs stopped (pid $pid)"
  fi
  rm -f "$run_dir/supervisord.pid"
  stop_legacy
}

# Processes started by the version of this script before supervisord: one pid file each.
stop_legacy() {
  local name pid
  for name in "${legacy_names[@]}"; do
    if pid=$(running_group "$run_dir/$name.pid"); then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      log "$name stopped (pid $pid, started before supervisord)"
    fi
    rm -f "$run_dir/$name.pid"
  done
}

start() {
  echo "=== $(date -u +%FT%TZ) starting supervisord with $config" >> "$log_dir/supervisord.log"
  # supervisord forks into the background and closes its standard streams, so nothing keeps
  # the caller's stdout open (`make up | grep =` sees end of file).
  "$root/.venv/bin/supervisord" -c "$config" < /dev/null >> "$log_dir/supervisord.log" 2>&1
  for _ in $(seq 100); do running_group "$run_dir/supervisord.pid" >/dev/null && break; sleep 0.1; done
  running_group "$run_dir/supervisord.pid" >/dev/null \
    || { log "supervisord did not start, see $log_dir/supervisord.log"; return 1; }
  log "supervisord started (pid $(cat "$run_dir/supervisord.pid")): web, worker, scheduler; logs in $log_dir"
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
    sleep 0.5
  done
  log "web did not answer $api_url/healthz with 200 within ${health_timeout_s} s; last lines of its log:"
  tail -n 40 "$log_dir/web.log" >&2 || true
  return 1
}

# supervisorctl's status exits 3 when a program is not RUNNING, and so does this.
status() {
  running_group "$run_dir/supervisord.pid" >/dev/null || { log "supervisord not running"; return 3; }
  ctl status >&2
}

# Prints the pid of a program's main process (its process group) on stdout, for bench/cpu.py.
program_pid() {
  running_group "$run_dir/supervisord.pid" >/dev/null || { log "supervisord not running"; return 3; }
  local pid
  pid=$(ctl pid "$1")
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || { log "$1 is not running: $pid"; return 3; }
  echo "$pid"
}

cd "$root"
mkdir -p "$log_dir"
case "${1:-}" in
  start) stop; reset_metrics; start; wait_healthy ;;
  stop) stop ;;
  status) status ;;
  pid) program_pid "${2:?usage: $0 pid web|worker|scheduler}" ;;
  *) echo "usage: $0 start|stop|status|pid NAME" >&2; exit 2 ;;
esac
