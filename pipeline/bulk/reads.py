"""Reading an activity and its row outcomes, as pages or as a CSV export."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pipeline.bulk.ports import Activity
from pipeline.bulk.status import ROW_STATUSES
from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.statements import Page, decode_cursor, page_of

#: Rows read per database round trip while exporting.
EXPORT_BATCH_ROWS = 5_000
#: Characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def parse_row_status(raw: str | None) -> str | None:
    if raw is None:
        return None
    status = raw.strip().upper()
    if status not in ROW_STATUSES:
        raise ValidationFailed("status is not valid", [FieldError("status", f"one of {', '.join(ROW_STATUSES)}")])
    return status


def activity(uow, activity_id: str) -> Activity:
    with uow:
        found = uow.bulk.activity(activity_id)
    if found is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    return found


def recent_activities(uow, limit: int) -> list[Activity]:
    """The newest activities first, for the dashboard."""
    with uow:
        return uow.bulk.recent_activities(limit)


def rows_page(uow, activity_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
    after = decode_cursor(cursor) or 0
    with uow:
        if uow.bulk.activity(activity_id) is None:
            raise NotFound(f"no bulk-credit activity {activity_id}")
        rows = uow.bulk.rows(activity_id, status, after, limit + 1)
    return page_of(rows, limit, "row_number")


def history_page(uow, activity_id: str, limit: int, cursor: str | None) -> Page:
    """The activity's status changes, oldest first, a page at a time. Raises NotFound."""
    after = decode_cursor(cursor) or 0
    with uow:
        if uow.bulk.activity(activity_id) is None:
            raise NotFound(f"no bulk-credit activity {activity_id}")
        changes = uow.bulk.history(activity_id, after, limit + 1)
    return page_of(changes, limit, "id")


def export_rows(uow_factory: Callable, activity_id: str, status: str | None) -> Iterator[list[dict[str, Any]]]:
    """Yields batches of rows, each read in its own short transaction; the caller streams them."""
    activity(uow_factory(), activity_id)
    after = 0
    while True:
        with uow_factory() as uow:
            batch = uow.bulk.rows(activity_id, status, after, EXPORT_BATCH_ROWS)
        if not batch:
            return
        yield batch
        after = batch[-1]["row_number"]


def spreadsheet_safe(cell: object) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula (OWASP's CSV injection advice)."""
    text = "" if cell is None else str(cell)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
