#!/usr/bin/env bash
# Prints an API token of scope `admin` on stdout, creating one when .run/admin_token is missing
# or the running API no longer accepts it (the database was recreated). Needs `make up` first.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
token_file="$root/.run/admin_token"
api_url=${API_URL:-http://127.0.0.1:${WALLET_API_PORT:-8088}}
cd "$root"

# Succeeds unless the API answers 401 to the token: any other answer, or none, says nothing
# against it (the endpoint may not exist yet, or the API may be down).
accepted() {
  .venv/bin/python - "$api_url/api/v1/reconciliations?limit=1" "$1" <<'PY'
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"Bearer {sys.argv[2]}"})
try:
    urllib.request.urlopen(request, timeout=5).close()
except urllib.error.HTTPError as error:
    sys.exit(1 if error.code == 401 else 0)
except OSError:
    pass
PY
}

token=$(cat "$token_file" 2>/dev/null || true)
if [ -z "$token" ] || ! accepted "$token"; then
  echo "admin_token: creating an admin token in .run/admin_token" >&2
  token=$(.venv/bin/flask --app api keys create --scope admin | tail -n 1 | tr -d '[:space:]')
  [ -n "$token" ] || { echo "admin_token: 'keys create' printed no token" >&2; exit 1; }
  (umask 077 && printf '%s\n' "$token" > "$token_file")
fi
printf '%s\n' "$token"
