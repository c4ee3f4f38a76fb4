"""Finding the rows behind a refusal of the database, so that they fail alone.

When PostgreSQL refuses a chunk's credit for a reason that is not transient (a
constraint a row breaks, a value out of range that no check foresaw), the chunk is run
again with each range of rows in a savepoint of its own. A refused range is split in
two by row id and each half tried again; a single refused row fails with
`cannot_apply`. With k bad rows among n this takes about 2k·log2(n/k) tries, each a
handful of statements. Past ISOLATION_TRIES_MAX tries (a chunk where a large share of
the rows is refused), the rows not tried yet fail with `chunk_failed`, saying so: they
were not refused, and an operator's retry tries them again.
"""
from __future__ import annotations

from pipeline.bulk.ports import Chunk, RowsRefused
from pipeline.bulk.status import CANNOT_APPLY, CHUNK_FAILED, FAILURE_MESSAGES

#: Credit attempts one chunk transaction may make while isolating refused rows: at a few
#: milliseconds each, a few seconds at most; enough for about 100 bad rows in 5,000.
ISOLATION_TRIES_MAX = 1_024
#: The longest row message stored, in characters.
MESSAGE_LENGTH_MAX = 500


def credit_isolating(uow, chunk: Chunk, shard: int) -> tuple[int, int]:
    """Credits every PENDING row of `chunk` the database accepts; returns (credited, failed)."""
    credited = failed = tries = 0
    uow.bulk.create_empty_wallets(chunk)  # once, outside the savepoints (storage/bulk/apply.py says why)
    ranges = [(chunk.first_row_id, chunk.last_row_id)]
    while ranges:
        first, last = ranges.pop()
        if tries >= ISOLATION_TRIES_MAX:
            message = (f"{FAILURE_MESSAGES[CHUNK_FAILED]}: not tried, since the database refused too many of"
                       f" its rows to isolate them ({ISOLATION_TRIES_MAX} tries); retry once the cause is fixed")
            failed += uow.bulk.fail_rows(chunk, first, last, CHUNK_FAILED, message[:MESSAGE_LENGTH_MAX])
            continue
        tries += 1
        try:
            with uow.savepoint():
                done, out_of_range = uow.bulk.credit_pending(chunk, shard, first, last)
            credited, failed = credited + done, failed + out_of_range
            continue
        except RowsRefused as refusal:
            reason = str(refusal)
        ids = uow.bulk.pending_row_ids(chunk, first, last)
        if len(ids) <= 1:
            message = f"{FAILURE_MESSAGES[CANNOT_APPLY]}: {reason}"
            failed += uow.bulk.fail_rows(chunk, first, last, CANNOT_APPLY, message[:MESSAGE_LENGTH_MAX])
        else:
            middle = ids[len(ids) // 2]
            ranges += [(first, middle - 1), (middle, last)]
    return credited, failed
