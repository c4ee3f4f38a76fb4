"""What the event outbox costs a transfer: the same transfers with its trigger on and off.

Runs transfers through the use case (one unit of work each, as the HTTP path does, without
HTTP) at 1 and 8 threads, alternating the trigger off and on over several rounds so that
other load on the machine falls on both; then the same with the publisher draining the
outbox to Redis meanwhile. Prints the median transfers per second of each.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python -m bench.event_outbox

It disables the trigger with ALTER TABLE for the "off" rounds: run it on a database of its own.
"""
from __future__ import annotations

import statistics
import threading
import time
import uuid

from sqlalchemy import text

import bootstrap
from jobs.events import drain
from pipeline import wallets
from pipeline.money import currency
from storage.event_streams import RedisEventLog
from storage.migrate import upgrade

USERS = 200
ROUNDS = 5
WINDOW_S = 3.0


def seed(services) -> list[str]:
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    with services.uow() as uow:
        uow.bulk.copy_users((user, "Bench", f"{user}@example.test") for user in users)
        uow.commit()
    for user in users:
        with services.uow() as uow:
            wallets.deposit(uow, services.settings, user, wallets.MoneyRequest(currency("SGD"), 10**9, None))
            uow.commit()
    return users


def rate(services, users: list[str], threads: int) -> float:
    done = [0] * threads
    stop = time.monotonic() + WINDOW_S
    one = wallets.MoneyRequest(currency("SGD"), 1, None)

    def run(n: int):
        k = n
        while time.monotonic() < stop:
            k += threads
            with services.uow() as uow:
                wallets.transfer(uow, services.settings, users[k % USERS], users[(k * 7 + 1) % USERS], one)
                uow.commit()
            done[n] += 1

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / WINDOW_S


def set_trigger(services, enabled: bool) -> None:
    with services.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE postings {'ENABLE' if enabled else 'DISABLE'} TRIGGER"
                                " postings_event_outbox"))


def main() -> None:
    services = bootstrap.services()
    upgrade(services.engine)
    users = seed(services)
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for publisher in (False, True):
            stop = threading.Event()
            if publisher:
                log = RedisEventLog.from_settings(services.settings)
                threading.Thread(target=lambda: [drain(services.uow, log, 1_000, 0.05, 1.0)
                                                 for _ in iter(stop.is_set, True)], daemon=True).start()
            for _ in range(ROUNDS):
                for enabled in (False, True):
                    set_trigger(services, enabled)
                    for threads in (1, 8):
                        label = ("on" if enabled else "off") + (" + publisher" if publisher else "")
                        results.setdefault((label, threads), []).append(rate(services, users, threads))
            stop.set()
    finally:
        set_trigger(services, True)
    for (label, threads), rates in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"trigger {label:16} threads {threads}: {statistics.median(rates):7.0f} transfers/s "
              f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
