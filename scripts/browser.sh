#!/usr/bin/env bash
# Installs the browser that tests/test_dashboard_browser.py drives: Debian's Chromium and its
# ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver), when either is missing. Selenium
# talks to that chromedriver directly; nothing downloads a browser of its own. Needs root for
# apt-get, only when something is missing. Running it twice is harmless.
set -euo pipefail

log() { echo "browser: $*" >&2; }

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "need root to install chromium and chromium-driver from Debian's packages"
  exit 1
fi
log "installing chromium and chromium-driver from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver < /dev/null > /dev/null
log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: no version')"
