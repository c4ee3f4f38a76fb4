#!/usr/bin/env bash
# Starts and stops the local PostgreSQL and Redis that development, tests and benchmarks use.
# Data lives under .run/ (git-ignored), or WALLET_RUN_DIR (`make test` uses .run/test with
# ports of its own); each server's pid is its own pid file, so `stop` stops exactly what
# `start` started. Running `start` twice is harmless.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
run_dir=${WALLET_RUN_DIR:-$root/.run}
pg_port=${WALLET_PG_PORT:-54329}
redis_port=${WALLET_REDIS_PORT:-63799}
pg_user=wallet

log() { echo "services: $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then log "need root to install $*"; exit 1; fi
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(readlink -f "$(command -v initdb)")"
}

ensure_binaries() {
  [ -n "$(pg_bindir)" ] || apt_install postgresql postgresql-contrib
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
}

# PostgreSQL refuses to run as root: as root we run it as an unprivileged system user.
as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$pg_os_user" -- "$@"; else "$@"; fi
}

choose_pg_os_user() {
  pg_os_user=$(id -un)
  [ "$(id -u)" = 0 ] || return 0
  pg_os_user=postgres
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
}

pg_data_dir() {
  # The server's user must be able to reach the data folder; a project under a private home
  # folder falls back to /tmp, keyed by the run folder (the tests' servers have their own).
  local dir="$run_dir/pg" key="$root"
  [ "$run_dir" = "$root/.run" ] || key="$run_dir"
  if [ "$(id -u)" = 0 ] && ! runuser -u "$pg_os_user" -- test -x "$run_dir"; then
    dir="/tmp/wallet-pipeline-$(echo "$key" | md5sum | cut -c1-8)/pg"
  fi
  echo "$dir"
}

start_postgres() {
  local bin data
  bin=$(pg_bindir); data=$(pg_data_dir)
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown -R "$pg_os_user" "$data"
  chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising PostgreSQL in $data"
    as_pg_owner "$bin/initdb" -D "$data" -U "$pg_user" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$data'
max_connections = 300
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
# No DETAIL lines in the server log: a constraint's DETAIL quotes the row's values (an email,
# say), and the app writes its own log without them. See also the ALTER ROLE below.
log_error_verbosity = terse
CONF
  fi
  if as_pg_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on port $pg_port"
  else
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
    log "PostgreSQL started on port $pg_port"
  fi
  ln -sfn "$data" "$run_dir/pg-data" 2>/dev/null || true
  for db in wallet wallet_test; do
    psql -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
      || psql -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -qc "CREATE DATABASE $db"
  done
  # The same for a data folder made before that setting: for the app's role, from its next session.
  psql -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -qc \
    "ALTER ROLE $pg_user SET log_error_verbosity = 'terse'"
}

stop_postgres() {
  local bin data
  bin=$(pg_bindir); data=$(pg_data_dir)
  [ -f "$data/postmaster.pid" ] || return 0
  as_pg_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "PostgreSQL stopped"
}

start_redis() {
  mkdir -p "$run_dir/redis"
  if [ -f "$run_dir/redis.pid" ] && kill -0 "$(cat "$run_dir/redis.pid")" 2>/dev/null; then
    log "Redis already running on port $redis_port"; return
  fi
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run_dir/redis" \
    --pidfile "$run_dir/redis.pid" --daemonize yes --save '' --appendonly no \
    --logfile "$run_dir/redis/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  log "Redis started on port $redis_port"
}

stop_redis() {
  local pid
  pid=$(cat "$run_dir/redis.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  # Wait until it has exited and freed its port, so that a restart can bind it again.
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$run_dir/redis.pid"
  log "Redis stopped"
}

mkdir -p "$run_dir"
choose_pg_os_user
case "${1:-}" in
  start) ensure_binaries; start_postgres; start_redis ;;
  stop) stop_redis; stop_postgres ;;
  restart-postgres) stop_postgres; start_postgres ;;
  restart-redis) stop_redis; start_redis ;;
  *) echo "usage: $0 start|stop|restart-postgres|restart-redis" >&2; exit 2 ;;
esac
