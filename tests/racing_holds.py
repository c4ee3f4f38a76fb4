"""A process for tests/test_hold_races.py: for each hold in turn, meets its siblings at a
barrier and then captures, voids or expires that hold through the use cases production runs,
and reports what happened. No pytest here: imported by processes started with the 'spawn' method."""
from __future__ import annotations


def race(action: str, rounds: list[dict], environ: dict, api_key_id: int, barrier) -> list[str]:
    import os

    os.environ.update(environ)
    import bootstrap
    from pipeline import holds
    from pipeline.audit import Actor
    from pipeline.config import Settings
    from pipeline.errors import Rejected
    from pipeline.retrying import committed

    settings = Settings.from_environ(environ)
    services = bootstrap.services(settings)
    services.uow().__enter__().connection.close()  # connect before the first barrier
    actor = Actor("api_key", api_key_id)
    outcomes = []
    for round in rounds:
        barrier.wait(timeout=60)
        try:
            if action == "capture":
                committed(services.uow, settings.transaction_attempts_max, lambda uow: holds.capture(
                    uow, settings, round["hold_id"], round["capture"], round["to_user_id"], actor))
                outcomes.append("won")
            elif action == "void":
                committed(services.uow, settings.transaction_attempts_max,
                          lambda uow: holds.void(uow, round["hold_id"], actor))
                outcomes.append("won")
            else:  # the scheduler's sweep, on a clock just past this round's hold (and no later one)
                expired = holds.expire_due(services.uow, round["expiry_clock"])
                outcomes.append("won" if expired else "nothing_due")
        except Rejected as refusal:
            outcomes.append(refusal.code)
    return outcomes
