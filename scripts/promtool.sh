#!/usr/bin/env bash
# Installs promtool, which tests/test_monitoring.py runs on monitoring/prometheus/rules.yml,
# when it is missing. promtool ships in Debian's `prometheus` package, together with the
# Prometheus server; installing that package would also add a system user and (where an init
# system runs) start a server on port 9090. So the package is only downloaded, and its
# promtool (a static Go binary that needs nothing but libc) is copied to /usr/local/bin.
# Needs root for apt-get, only when promtool is missing. Running it twice is harmless.
set -euo pipefail

log() { echo "promtool: $*" >&2; }
target=/usr/local/bin/promtool

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "need root to fetch promtool from Debian's prometheus package (apt-get)"
  exit 1
fi
log "extracting promtool from Debian's prometheus package into $target"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as its sandbox user, which must be able to write there.
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
(cd "$work" && apt-get download -qq prometheus < /dev/null > /dev/null)
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$target"
log "$("$target" --version 2>&1 | head -n 1)"
