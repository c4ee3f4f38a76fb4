"""The bulk-credit workload of bench/bulk_compare.py, run inside the checkout under test.

Run by path, never imported: `python bench/compare_driver.py TREE COMMAND ...` puts TREE (a
checkout of any commit since the bulk pipeline's core) first on sys.path, so that `bootstrap`,
`pipeline` and `storage` are that commit's own. It uses only what every such commit has:
`bootstrap.services`, `storage.migrate.upgrade`, `pipeline.bulk.upload.upload(uow_factory,
queue, settings, source, file_name)`, `actors.redis_broker`, `actors.bulk_credit.ChunkMessages`,
and plain SQL on tables they share (users, wallets, bulk_activities). Funding accounts are
topped up only where the commit has them (pipeline/funding.py).

Commands (DATABASE_URL and REDIS_URL from the environment; one JSON object on stdout):
    migrate                  the commit's migrations, up to its head
    seed FILE                a user for every id in FILE (one a line), each with an empty
                             wallet in the default currency, as after a first payout
    run CSV ROWS GROUP       vacuums the database (untimed, so that each run starts from a
                             settled table rather than an autovacuum at a random moment),
                             uploads CSV in this process, sends its chunks to the worker
                             processes listening on REDIS_URL (process group GROUP), and
                             times it until settled, in seconds of the clock and of CPU
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

#: How often the activity's status is read while it settles, in seconds.
POLL_S = 0.1
#: The longest a run may take to settle, in seconds.
SETTLE_S_MAX = 900
#: Users written per COPY batch.
SEED_BATCH_USERS = 100_000
#: What `default` is topped up by where funding accounts exist, in minor units: far more
#: than every file of a benchmark pays, so that none waits for funds.
FUNDING_MINOR = 10**14
FINAL_STATUSES = ("COMPLETED", "PARTIALLY_COMPLETED", "FAILED")


def services():
    import bootstrap
    from pipeline.config import Settings

    return bootstrap.services(Settings.from_environ())


def migrate() -> dict:
    from storage.migrate import upgrade

    upgrade(services().engine)
    return {}


def seed(ids_path: str) -> dict:
    from sqlalchemy import text

    built, started = services(), time.monotonic()
    ids = Path(ids_path).read_text().split()
    with built.engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        for start in range(0, len(ids), SEED_BATCH_USERS):
            with cursor.copy("COPY users (id, name, email) FROM STDIN") as copy:
                for user_id in ids[start:start + SEED_BATCH_USERS]:
                    copy.write_row((user_id, "Bench user", f"bench-{user_id}@example.test"))
        connection.execute(text("INSERT INTO wallets (user_id, currency) SELECT id, :currency FROM users"),
                           {"currency": built.settings.default_currency})
    funded = _top_up(built) if importlib.util.find_spec("pipeline.funding") else None
    vacuum(built.engine)
    return {"users": len(ids), "seconds": time.monotonic() - started, "funded_minor": funded}


def _top_up(built) -> int:
    from pipeline import funding
    from pipeline.money import MINOR_UNITS, Currency
    from pipeline.wallets import MoneyRequest

    code = built.settings.default_currency
    with built.uow() as uow:
        funding.top_up(uow, built.settings, funding.DEFAULT_ACCOUNT,
                       MoneyRequest(Currency(code, MINOR_UNITS[code]), FUNDING_MINOR, "bench: bulk compare"))
        uow.commit()
    return FUNDING_MINOR


def vacuum(engine) -> float:
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM (FREEZE, ANALYZE)")
    return time.monotonic() - started


def cpu_s(url, worker_group: int) -> dict[str, float]:
    """CPU seconds used so far by this process, the worker processes (their process group)
    and the PostgreSQL backends serving `url`'s database, read from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    backend = f"postgres: {url.username} {url.database} "
    workers = postgres = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # it ended while we looked
                continue
            used = int(fields[11]) + int(fields[12])  # user and system ticks
            if int(fields[2]) == worker_group:
                workers += used
            elif command.startswith(backend):
                postgres += used
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"upload_process": own.ru_utime + own.ru_stime, "workers": workers / ticks, "postgres": postgres / ticks}


def run(csv_path: str, rows: int, worker_group: int) -> dict:
    from sqlalchemy import text

    from actors import redis_broker
    from actors.bulk_credit import ChunkMessages
    from pipeline.bulk.upload import upload

    built = services()
    queue = ChunkMessages(redis_broker(built.settings.redis_url))
    vacuum_s = vacuum(built.engine)
    cpu_before = cpu_s(built.engine.url, worker_group)
    started = time.monotonic()
    with open(csv_path, "rb") as source:
        uploaded = upload(built.uow, queue, built.settings, source, Path(csv_path).name)
    upload_s = time.monotonic() - started
    assert uploaded.created, "the file was found as a duplicate: every run must be a new file"
    query = text("SELECT status, successful_records FROM bulk_activities WHERE id = :id")
    while True:
        with built.engine.connect() as connection:
            status, successful = connection.execute(query, {"id": uploaded.activity.id}).one()
        if status in FINAL_STATUSES:
            break
        assert time.monotonic() - started < SETTLE_S_MAX, f"activity {uploaded.activity.id} did not settle"
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    cpu = {part: used - cpu_before[part] for part, used in cpu_s(built.engine.url, worker_group).items()}
    assert status == "COMPLETED" and successful == rows, (status, successful, rows)
    return {"rows": rows, "upload_s": upload_s, "seconds": seconds, "rate_per_s": rows / seconds,
            "cpu_s": sum(cpu.values()), "cpu_parts_s": cpu, "vacuum_s": vacuum_s}


def main(argv: list[str]) -> None:
    tree, command, *arguments = argv
    sys.path[0] = str(Path(tree).resolve())  # the tree under test, not this script's folder
    if command == "migrate":
        result = migrate()
    elif command == "seed":
        result = seed(arguments[0])
    elif command == "run":
        result = run(arguments[0], int(arguments[1]), int(arguments[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
