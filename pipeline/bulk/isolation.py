"""Finding the rows behind a refusal of the database, so that they fail alone.

When PostgreSQL refuses a chunk's credit for a reason that is not transient (a
constraint a row breaks, a value out of range that no check foresaw), the chunk is run
again with each range of rows in a savepoint of its own. A refused range is split in
two by row id and each half tried again; a single refused row fails with
`cannot_apply`. With k bad rows among n this takes about 2k·log2(n/k) tries, each a
handful of statements; past ISOLATION_REFUSALS_MAX refusals (a chunk where most rows
fail, say) the rows still unresolved fail together with the same code.
"""
from __future__ import annotations

from pipeline.bulk.ports import Chunk, RowsRefused
from pipeline.bulk.status import CANNOT_APPLY, FAILURE_MESSAGES

#: Refused ranges one chunk transaction may bisect before failing what is left; about 20
#: bad rows in a 5,000-row chunk, at a few milliseconds a try.
ISOLATION_REFUSALS_MAX = 256


def credit_isolating(uow, chunk: Chunk, shard: int) -> tuple[int, int]:
    """Credits every PENDING row of `chunk` the database accepts; returns (credited, failed)."""
    credited = failed = refusals = 0
    ranges = [(chunk.first_row_id, chunk.last_row_id)]
    while ranges:
        first, last = ranges.pop()
        try:
            with uow.savepoint():
                done, out_of_range = uow.bulk.credit_pending(chunk, shard, first, last)
            credited, failed = credited + done, failed + out_of_range
            continue
        except RowsRefused as refusal:
            refusals += 1
            reason = str(refusal)
        ids = uow.bulk.pending_row_ids(chunk, first, last)
        if len(ids) <= 1 or refusals >= ISOLATION_REFUSALS_MAX:
            message = f"{FAILURE_MESSAGES[CANNOT_APPLY]}: {reason}"[:500]
            failed += uow.bulk.fail_rows(chunk, first, last, CANNOT_APPLY, message)
        else:
            middle = ids[len(ids) // 2]
            ranges += [(first, middle - 1), (middle, last)]
    return credited, failed
