"""`make demo`: the main job end to end, on the stack `make up` started.

1. Seeds 100,000 users with the CLI (`users seed-and-export`) and exports their CSV.
2. Uploads it through the API and shows progress until every row is settled.
3. Restarts the processes with a few users in BULK_CREDIT_FAIL_USER_IDS, uploads a second
   file that credits them among others. Nothing funds it yet: it waits in AWAITING_FUNDS
   until the demo tops the `default` funding account up, then pays out, and shows the
   rows of those users FAILED; then restarts with the variable cleared and retries the
   activity until it is COMPLETED.
4. Prints a summary (rows, seconds, rows/s) and whether the credited wallets reconcile:
   each balance equals the sum of its postings, and a full reconciliation run is clean.

Environment, as `make up` prints it: API_URL, ADMIN_TOKEN, DATABASE_URL, REDIS_URL.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import psycopg
import requests

from bench.bulk import MultipartFile
from bench.ledger_checks import libpq_url

ROOT = Path(__file__).resolve().parent.parent
USERS = 100_000
#: Users of the second file, and how many of them the fault injection fails.
SECOND_FILE_USERS = 1_000
FAILING_USERS = 5
SEED_CSV = ROOT / "exports" / "users_wallet_seed.csv"
SECOND_CSV = ROOT / "exports" / "demo_second_file.csv"
POLL_S = 0.5
SETTLE_S_MAX = 600
RECONCILE_S_MAX = 300


class Api:
    def __init__(self, url: str, token: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def upload(self, path: Path) -> dict:
        boundary = uuid.uuid4().hex
        response = self.session.post(f"{self.url}/api/v1/wallet/bulk-credit", data=MultipartFile(path, boundary),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                     timeout=600)
        assert response.status_code in (200, 202), response.text
        return response.json()

    def get(self, path: str) -> dict:
        response = self.session.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict, headers: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def activity(self, activity_id: str) -> dict:
        return self.get(f"/api/v1/wallet/bulk-credit/{activity_id}")


def follow(api: Api, activity_id: str, label: str) -> dict:
    """Shows a progress bar of settled rows until the activity reaches a final status."""
    activity = api.activity(activity_id)
    settled = lambda a: a["successful_records"] + a["failed_records"]  # noqa: E731
    deadline = time.monotonic() + SETTLE_S_MAX
    with click.progressbar(length=max(activity["valid_records"], 1), label=label) as bar:
        bar.update(settled(activity))
        while activity["status"] not in ("COMPLETED", "PARTIALLY_COMPLETED", "FAILED"):
            assert time.monotonic() < deadline, f"activity {activity_id} did not settle: {activity}"
            time.sleep(POLL_S)
            before, activity = settled(activity), api.activity(activity_id)
            bar.update(settled(activity) - before)
    click.echo(f"  {activity['status']}: {activity['successful_records']:,} succeeded, {activity['failed_records']:,}"
               f" failed, {activity['invalid_records']:,} invalid of {activity['total_records']:,}")
    return activity


def restart_processes(fail_user_ids: str) -> None:
    """`BULK_CREDIT_FAIL_USER_IDS=... make up` does this: the processes restart with the variable."""
    environ = {**os.environ, "BULK_CREDIT_FAIL_USER_IDS": fail_user_ids}
    subprocess.run(["scripts/processes.sh", "start"], cwd=ROOT, env=environ, check=True)


def seed_users() -> list[str]:
    subprocess.run([sys.executable, "-m", "flask", "--app", "api", "users", "seed-and-export", "--total",
                    str(USERS), "--out", str(SEED_CSV)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with SEED_CSV.open() as lines:
        next(lines)
        return [line.split(",", 1)[0] for line in lines]


def wallets_reconcile(database_url: str, users: list[str]) -> tuple[int, int]:
    """(wallets checked, wallets whose balance differs from the sum of their postings)."""
    with psycopg.connect(libpq_url(database_url)) as connection:
        return connection.execute("""
            SELECT count(*), count(*) FILTER (WHERE w.balance <> coalesce(p.total, 0))
              FROM wallets w
              LEFT JOIN LATERAL (SELECT sum(amount) AS total FROM postings WHERE wallet_id = w.id) p ON true
             WHERE w.user_id = ANY(%s::uuid[])""", (users,)).fetchone()


def full_reconciliation(api: Api) -> str:
    started = api.post("/api/v1/reconciliations", {"full": True})
    if started.status_code == 404:
        return "not available"
    run_id, deadline = started.json()["id"], time.monotonic() + RECONCILE_S_MAX
    while (run := api.get(f"/api/v1/reconciliations/{run_id}"))["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            return "still running"
        time.sleep(POLL_S)
    return run["status"]


def main() -> int:
    api = Api(os.environ.get("API_URL", "http://127.0.0.1:8088"), os.environ["ADMIN_TOKEN"])
    database_url = os.environ.get("DATABASE_URL", "postgresql+psycopg://wallet@127.0.0.1:54329/wallet")
    click.echo(f"1. seeding {USERS:,} users and exporting {SEED_CSV.relative_to(ROOT)}")
    started = time.monotonic()
    users = seed_users()
    click.echo(f"  {len(users):,} users in {time.monotonic() - started:.1f} s")

    click.echo("2. uploading it")
    started = time.monotonic()
    accepted = api.upload(SEED_CSV)
    first = follow(api, accepted["activity_id"], "  crediting")
    first_seconds = time.monotonic() - started

    failing = users[:FAILING_USERS]
    click.echo(f"3. a second file of {SECOND_FILE_USERS:,} credits, {FAILING_USERS} of them to users in"
               " BULK_CREDIT_FAIL_USER_IDS")
    restart_processes(",".join(failing))
    SECOND_CSV.write_text("uuid,amount\n" + "".join(f"{user},25.00\n" for user in users[:SECOND_FILE_USERS]))
    second_id = api.upload(SECOND_CSV)["activity_id"]
    waiting = api.activity(second_id)
    account = api.get("/api/v1/funding-accounts/default")
    click.echo(f"  {waiting['status']}: the default funding account holds {account['balances']}")
    required = f"{SECOND_FILE_USERS * 25}.00"
    topped = api.post("/api/v1/funding-accounts/default/top-up", {"amount": required, "currency": "SGD",
                                                                  "reference": f"demo {uuid.uuid4()}"},
                      headers={"Idempotency-Key": f"demo-top-up-{second_id}"})
    click.echo(f"  topped up {required} SGD: {topped.status_code}; the scheduler releases the file")
    second = follow(api, second_id, "  crediting")
    failed_rows = api.get(f"/api/v1/wallet/bulk-credit/{second_id}/rows?status=FAILED")["data"]
    for row in failed_rows:
        click.echo(f"  row {row['row_number']}: {row['user_id']} {row['status']} {row['error_code']}")
    click.echo("  clearing BULK_CREDIT_FAIL_USER_IDS and retrying")
    restart_processes("")
    retried = api.post("/api/v1/wallet/bulk-credit/retry", {"activity_id": second_id})
    click.echo(f"  retry: {retried.status_code} {retried.json()}")
    second = follow(api, second_id, "  retrying")

    checked, drifted = wallets_reconcile(database_url, users)
    reconciliation = full_reconciliation(api)
    click.echo("\nsummary")
    click.echo(f"  first file: {first['successful_records']:,} rows in {first_seconds:.1f} s,"
               f" {first['successful_records'] / first_seconds:,.0f} rows/s, {first['status']}")
    click.echo(f"  second file: {second['successful_records']:,} rows, {len(failed_rows)} failed then retried,"
               f" {second['status']}")
    click.echo(f"  credited wallets: {checked:,} checked, {drifted} whose balance differs from its postings")
    click.echo(f"  full reconciliation: {reconciliation}")
    clean = (first["status"] == second["status"] == "COMPLETED" and drifted == 0
             and reconciliation in ("clean", "not available"))
    click.echo(f"  reconciliation of the credited wallets is {'clean' if clean else 'NOT clean'}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
