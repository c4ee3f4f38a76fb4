"""Processes for tests/test_bulk_reversal_end_to_end.py: one applies a reversal's chunks while
others transfer money out of the same wallets, each through the use cases production runs,
all released at once by a barrier. No pytest here: imported by processes started with the
'spawn' method."""
from __future__ import annotations


def _services(environ: dict):
    import os

    os.environ.update(environ)
    import bootstrap
    from pipeline.config import Settings

    services = bootstrap.services(Settings.from_environ(environ))
    services.uow().__enter__().connection.close()  # connect before the barrier
    return services


def apply_reversal(chunk_ids: list[int], environ: dict, barrier) -> list[tuple[int, int]]:
    """Applies the chunks in turn; returns (rows reversed, rows failed) of each."""
    from pipeline.bulk import chunks

    services = _services(environ)
    barrier.wait(timeout=60)
    applied = [chunks.apply_chunk(services.uow, services.settings, chunk_id) for chunk_id in chunk_ids]
    return [(outcome.credited, outcome.failed) for outcome in applied]


def transfer_out(user_ids: list[str], to_user_id: str, amount_minor: int, environ: dict, barrier) -> dict[str, str]:
    """Transfers `amount_minor` SGD from each user to `to_user_id`; returns each user's outcome:
    'moved' or the refusal's code."""
    from pipeline import wallets
    from pipeline.errors import Rejected
    from pipeline.money import MINOR_UNITS, Currency
    from pipeline.retrying import with_retries

    services = _services(environ)
    request = wallets.MoneyRequest(Currency("SGD", MINOR_UNITS["SGD"]), amount_minor, None)
    barrier.wait(timeout=60)
    outcomes = {}
    for user_id in user_ids:
        def attempt() -> None:
            with services.uow() as uow:
                wallets.transfer(uow, services.settings, user_id, to_user_id, request)
                uow.commit()
        try:
            with_retries(services.settings.transaction_attempts_max, attempt)
            outcomes[user_id] = "moved"
        except Rejected as refusal:
            outcomes[user_id] = refusal.code
    return outcomes
