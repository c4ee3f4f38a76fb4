"""Reading an activity and its row outcomes, as pages or as a CSV export.

A row outcome carries the row's values (for an INVALID row, what could be read of them),
its status and, for a SUCCESS row, its journal entry and its own posting; `raw` holds the
row's original cells by column name (see storage migration 0007 for how they are kept).

Exports: the INVALID rows export as a file to correct and upload again: the file's own
input columns with their original cells, then `row_number`, `error_code` and
`error_message`, which an upload accepts and ignores. Every other export is a report of
outcomes whose columns (`status`, `posting_id`, ...) an upload refuses, so that a report of
credited rows cannot be uploaded again by mistake and pay twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

from pipeline.bulk.csv_records import cell_value, spreadsheet_safe
from pipeline.bulk.ports import Activity
from pipeline.bulk.rows import INPUT_COLUMNS, canonical_cells
from pipeline.bulk.status import ACTIVITY_STATUSES, ROW_INVALID, ROW_STATUSES
from pipeline.errors import FieldError, NotFound, ValidationFailed
from pipeline.money import MINOR_UNITS, Currency, format_amount
from pipeline.text import storable
from pipeline.statements import Page, decode_cursor, page_of

__all__ = ["spreadsheet_safe"]

#: Rows read per database round trip while exporting.
EXPORT_BATCH_ROWS = 5_000
#: The fields of a row outcome, in the order of the API and of a report export.
ROW_FIELDS = ("row_number", "user_id", "amount", "currency", "reference", "status", "error_code", "error_message",
              "attempts", "transaction_id", "posting_id", "raw")
#: The columns of a report export: every field but `raw`, whose cells the INVALID export holds.
REPORT_COLUMNS = ROW_FIELDS[:-1]
#: What the INVALID export adds after the file's input columns.
CORRECTION_COLUMNS = ("row_number", "error_code", "error_message")


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


#: The longest part of a file name the activity list searches for, in characters.
FILE_NAME_SEARCH_LENGTH_MAX = 255


@dataclass(frozen=True)
class ActivityFilters:
    """What the activity list may be narrowed to: statuses (any of), a part of the file name
    (case-insensitive), and a creation time range [created_after, created_before)."""

    statuses: tuple[str, ...] = ()
    file_name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    @classmethod
    def parse(cls, status: str | None, file_name: str | None, created_after: datetime | None,
              created_before: datetime | None) -> "ActivityFilters":
        """`status` is one status or several separated by commas. Raises ValidationFailed."""
        statuses = tuple(part.strip().upper() for part in (status or "").split(",") if part.strip())
        unknown = [part for part in statuses if part not in ACTIVITY_STATUSES]
        if unknown:
            raise ValidationFailed("status is not valid", [FieldError(
                "status", f"one or more of {', '.join(ACTIVITY_STATUSES)}, separated by commas")])
        if file_name is not None and (len(file_name) > FILE_NAME_SEARCH_LENGTH_MAX or not storable(file_name)):
            raise ValidationFailed("file_name is not valid", [FieldError(
                "file_name", f"at most {FILE_NAME_SEARCH_LENGTH_MAX} characters, no NUL")])
        if created_after and created_before and created_after >= created_before:
            raise ValidationFailed("the time range is empty", [FieldError(
                "created_before", "must be later than created_after")])
        return cls(statuses, file_name or None, created_after, created_before)

    def as_sql(self) -> dict[str, Any]:
        pattern = None
        if self.file_name is not None:
            pattern = self.file_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return {"statuses": list(self.statuses) or None, "file_name": pattern,
                "created_after": self.created_after, "created_before": self.created_before}


def activities_page(uow, filters: ActivityFilters, limit: int, cursor: str | None) -> tuple[list[Activity], str | None]:
    """Activities newest first, `limit` at most, after `cursor`; and the next page's cursor.
    Raises ValidationFailed for a cursor this API did not make."""
    before = decode_cursor(cursor, "a")
    with uow:
        found = uow.bulk.list_activities(filters.as_sql(), before, limit + 1)
    page = page_of([{"seq": seq, "activity": activity} for seq, activity in found], limit, "seq", "a")
    return [item["activity"] for item in page.items], page.next_cursor


def _columns(uow, activity_id: str) -> tuple[str, ...]:
    columns = uow.bulk.row_columns(activity_id)
    if columns is None:
        raise NotFound(f"no bulk-credit activity {activity_id}")
    return tuple(columns) or INPUT_COLUMNS  # an activity stored before its header was kept


def rows_page(uow, activity_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
    """A page of row outcomes (dicts of ROW_FIELDS) by row number. Raises NotFound."""
    after = decode_cursor(cursor, "o") or 0
    with uow:
        columns = _columns(uow, activity_id)
        rows = uow.bulk.rows(activity_id, status, after, limit + 1)
    page = page_of(rows, limit, "row_number", "o")
    return Page([row_outcome(columns, row) for row in page.items], page.next_cursor)


def history_page(uow, activity_id: str, limit: int, cursor: str | None) -> Page:
    """The activity's status changes, oldest first, a page at a time. Raises NotFound."""
    after = decode_cursor(cursor, "h") or 0
    with uow:
        if uow.bulk.activity(activity_id) is None:
            raise NotFound(f"no bulk-credit activity {activity_id}")
        changes = uow.bulk.history(activity_id, after, limit + 1)
    return page_of(changes, limit, "id", "h")


def row_outcome(columns: tuple[str, ...], row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it: values as strings, `raw` by column name.

    Cells past the header's width (a malformed row) are named by their spreadsheet column
    number, `column_3` for the third.
    """
    if row["raw"] is not None:
        cells = row["raw"]
    elif row["user_id"] is not None:
        cells = canonical_cells(columns, row["user_id"], row["amount_minor"], row["currency"].strip(),
                                row["reference"])
    else:
        cells = []
    names = list(columns) + [f"column_{number}" for number in range(len(columns) + 1, len(cells) + 1)]
    raw = dict(zip(names, cells))
    currency = row["currency"].strip() if row["currency"] else (cell_value(raw.get("currency", "")).upper() or None)
    if row["amount_minor"] is not None:
        user_id, amount = row["user_id"], format_amount(row["amount_minor"], Currency(currency, MINOR_UNITS[currency]))
    else:
        user_id, amount = cell_value(raw.get("uuid", "")), cell_value(raw.get("amount", ""))
    return {"row_number": row["row_number"], "user_id": user_id, "amount": amount, "currency": currency,
            "reference": row["reference"], "status": row["status"], "error_code": row["error_code"],
            "error_message": row["error_message"], "attempts": row["attempts"],
            "transaction_id": row["transaction_id"], "posting_id": row["posting_id"],
            "reversed_by": _reversed_by(row), "raw": raw}


def _reversed_by(row: dict[str, Any]) -> dict[str, Any] | None:
    """The reversal row that holds a credit row (PENDING, SUCCESS, or FAILED and waiting for a
    retry), or None. Rows read without it (before reversals existed) have none."""
    if row.get("reversed_by_activity_id") is None:
        return None
    return {"activity_id": row["reversed_by_activity_id"], "row_number": row["reversed_by_row_number"],
            "status": row["reversed_by_status"]}


def export_rows(uow_factory: Callable, activity_id: str, status: str | None) -> tuple[list[str], Iterator[list[list[str]]]]:
    """The export's header and its lines in batches, each batch read in its own short transaction.

    The activity is read now (NotFound at once, not in the middle of a stream); cells are
    spreadsheet-safe.
    """
    with uow_factory() as uow:
        columns = _columns(uow, activity_id)
    if status == ROW_INVALID:
        inputs = [column for column in columns if column in INPUT_COLUMNS]
        header = inputs + list(CORRECTION_COLUMNS)

        def cells_of(outcome: dict[str, Any]) -> list:
            raw, corrections = outcome["raw"], [outcome[field] for field in CORRECTION_COLUMNS]
            if len(raw) != len(columns):
                # A row of the wrong width keeps every cell it had, in order, so that the file
                # as exported refuses it again: never padded or cut into a row that would pay.
                return list(raw.values()) + corrections
            return [raw.get(column, "") for column in inputs] + corrections
    else:
        header = list(REPORT_COLUMNS)

        def cells_of(outcome: dict[str, Any]) -> list:
            return [outcome[field] for field in REPORT_COLUMNS]
    return header, _batches(uow_factory, activity_id, status, columns, cells_of)


def _batches(uow_factory, activity_id, status, columns, cells_of) -> Iterator[list[list[str]]]:
    after = 0
    while True:
        with uow_factory() as uow:
            batch = uow.bulk.rows(activity_id, status, after, EXPORT_BATCH_ROWS)
        if not batch:
            return
        yield [[spreadsheet_safe(cell) for cell in cells_of(row_outcome(columns, row))] for row in batch]
        after = batch[-1]["row_number"]


def export_file_name(activity_id: str, status: str | None) -> str:
    """`bulk-credit-<id>-invalid-rows.csv`, `...-all-rows.csv`: the name says what the file holds."""
    return f"bulk-credit-{activity_id}-{(status or 'all').lower()}-rows.csv"
