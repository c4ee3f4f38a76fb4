"""Reading a bulk-credit CSV as a stream of checked rows, each with its spreadsheet row number.

The csv module does the parsing, not pandas: it streams with constant memory, handles
quoted fields, embedded newlines, CRLF and a UTF-8 BOM, and it tells us exactly which
record we are on, so `row_number` is the row a spreadsheet shows (header = 1, blank
lines counted) even when a quoted field spans lines. pandas' `read_csv` skips blank
lines and renumbers rows, and would hold a chunk of strings as Python objects anyway.
The per-row checks here are a few regular-expression matches, measured at about 4 µs
a row; they are not where the time goes (COPY and the chunk transactions are). pandas
earns its place where whole columns are summarised (bench/ and reconciliation
reports), not in this loop. Rules that need the whole file or the database (duplicate
`reference`, unknown user) are set-based SQL after the COPY, in storage/bulk/.

Structural errors (broken quoting, bytes that are not UTF-8, NUL, oversized cells) are
csv_records.py's: they refuse the whole file. A row that breaks a rule here is stored
INVALID with its cells, so that it can be corrected and uploaded again.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable, Iterator

from pipeline.bulk.csv_records import FIELD_LENGTH_MAX, Records, UnreadableFile, cell_value, text_of
from pipeline.errors import FieldError
from pipeline.money import MINOR_UNITS, Currency, MoneyError, format_amount, parse_amount

__all__ = ["FIELD_LENGTH_MAX", "Row", "RowChecker", "UnreadableFile", "read_rows", "text_of"]

REQUIRED_COLUMNS = ("uuid", "amount")
OPTIONAL_COLUMNS = ("currency", "reference")
#: The columns a row's values come from, in the order an export writes them.
INPUT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Columns the export of INVALID rows adds to say why; an upload accepts and ignores them, so
#: that export, once corrected, uploads as it is.
ANNOTATION_COLUMNS = ("row_number", "error_code", "error_message")
#: The longest `reference`, in characters, as for single movements.
REFERENCE_LENGTH_MAX = 200

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Row error codes, stable: they are part of the API's row outcomes.
MALFORMED_ROW = "malformed_row"
INVALID_USER_ID = "invalid_user_id"
UNKNOWN_USER = "unknown_user"
INVALID_AMOUNT = "invalid_amount"
AMOUNT_ABOVE_MAXIMUM = "amount_above_maximum"
UNSUPPORTED_CURRENCY = "unsupported_currency"
INVALID_REFERENCE = "invalid_reference"
DUPLICATE_REFERENCE = "duplicate_reference"
#: The user was closed before the upload: a closed user never reopens, so the row is INVALID
#: (a user closed after the upload fails the row with the same code, FAILED: pipeline/bulk/status.py).
USER_CLOSED = "user_closed"
USER_CLOSED_MESSAGE = "the user is closed: no money moves for them any more"
ROW_ERROR_CODES = (MALFORMED_ROW, INVALID_USER_ID, UNKNOWN_USER, INVALID_AMOUNT, AMOUNT_ABOVE_MAXIMUM,
                   UNSUPPORTED_CURRENCY, INVALID_REFERENCE, DUPLICATE_REFERENCE, USER_CLOSED)


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: either valid (`error_code` None) or invalid with a code and a message.

    `cells` are the row's cells exactly as the file had them, or None when they are exactly
    `canonical_cells` of its values (the common case, rebuilt when read, so that a large
    file of plain rows stores nothing twice). An invalid row keeps what could be read of
    its `currency` (a supported code) and its `reference`.
    """

    row_number: int
    user_id: str | None
    amount_minor: int | None
    currency: str | None
    reference: str | None
    cells: tuple[str, ...] | None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Header:
    """Where each known column sits in a record, and the columns in the file's order."""

    positions: dict[str, int]
    columns: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.columns)


@dataclass(frozen=True)
class CsvRows:
    """The data rows of a file whose header has been read; iterate once."""

    columns: tuple[str, ...]
    rows: Iterator[Row]

    def __iter__(self) -> Iterator[Row]:
        return self.rows


def parse_header(fields: list[str]) -> Header:
    names = [field.strip().lower() for field in fields]
    errors = []
    unknown = [name for name in names if name not in INPUT_COLUMNS + ANNOTATION_COLUMNS]
    if unknown:
        delimiter = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars"))
                          if any(mark in column for column in unknown)), None)
        hint = (": a file of row outcomes cannot be uploaded again; export ?status=INVALID for a file to correct"
                if "status" in unknown else
                f": the file seems to separate its cells with {delimiter}; save it as CSV with commas"
                if delimiter else "")
        errors.append(FieldError("file", f"unknown columns {[name[:40] for name in unknown[:10]]}: allowed are "
                                         f"uuid, amount, currency, reference{hint}"))
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        errors.append(FieldError("file", f"missing columns {missing}: the header must name uuid and amount"))
    repeated = sorted({name[:40] for name in names if names.count(name) > 1})
    if repeated:
        errors.append(FieldError("file", f"repeated columns {repeated[:10]}"))
    if errors:
        raise UnreadableFile("the header row is not valid: " + "; ".join(e.message for e in errors), errors)
    return Header({name: position for position, name in enumerate(names) if name in INPUT_COLUMNS}, tuple(names))


def canonical_cells(columns: tuple[str, ...] | list[str], user_id: str, amount_minor: int, currency: str,
                    reference: str | None) -> list[str]:
    """The cells, in `columns` order, that a valid row's values are written as."""
    values = {"uuid": user_id, "amount": format_amount(amount_minor, Currency(currency, MINOR_UNITS[currency])),
              "currency": currency, "reference": reference or ""}
    return [values.get(column, "") for column in columns]


def maximum_minor(maximum: str, code: str) -> int:
    """BULK_CREDIT_MAX_AMOUNT (major units) in `code`'s minor units."""
    try:
        value = Decimal(maximum) * 10 ** MINOR_UNITS[code]
    except InvalidOperation as error:
        raise ValueError(f"BULK_CREDIT_MAX_AMOUNT {maximum!r} is not a decimal") from error
    assert value > 0 and value == value.to_integral_value()
    return int(value)


class RowChecker:
    """The checks one line can show, with the settings they need computed once."""

    def __init__(self, header: Header, supported: frozenset[str], default_currency: str, maximum: str):
        self.header = header
        self.currencies = {code: Currency(code, MINOR_UNITS[code]) for code in supported}
        self.maxima = {code: maximum_minor(maximum, code) for code in supported}
        self.default_currency = default_currency
        self.supported_text = ", ".join(sorted(supported))
        positions = header.positions
        self.uuid_at, self.amount_at = positions["uuid"], positions["amount"]
        self.currency_at, self.reference_at = positions.get("currency"), positions.get("reference")
        #: Whether a row's cells can be exactly its values written plainly (not with annotation columns).
        self.plain_possible = header.width == len(positions)

    def check(self, row_number: int, fields: list[str]) -> Row:
        """The row read from `fields`, valid or with the first rule it breaks."""
        if len(fields) != self.header.width:
            return self._invalid(row_number, fields, MALFORMED_ROW,
                                 f"expected {self.header.width} fields, found {len(fields)}")
        raw_user_id, raw_amount = cell_value(fields[self.uuid_at]), cell_value(fields[self.amount_at])
        code = self.default_currency
        if self.currency_at is not None:
            code = cell_value(fields[self.currency_at]).upper() or code
        reference = "" if self.reference_at is None else cell_value(fields[self.reference_at])
        if not _UUID.fullmatch(raw_user_id):
            return self._invalid(row_number, fields, INVALID_USER_ID,
                                 "uuid must be a user id such as 3f1c2a9e-4b7d-4c1e-9a2b-5d6e7f809a1b")
        unit = self.currencies.get(code)
        if unit is None:
            return self._invalid(row_number, fields, UNSUPPORTED_CURRENCY,
                                 f"currency {code[:10]!r} is not supported: use {self.supported_text}")
        try:
            amount = parse_amount(raw_amount, unit)
        except MoneyError as error:
            return self._invalid(row_number, fields, INVALID_AMOUNT, f"amount {error.reason}")
        if amount > self.maxima[code]:
            return self._invalid(row_number, fields, AMOUNT_ABOVE_MAXIMUM,
                                 f"amount is above BULK_CREDIT_MAX_AMOUNT ({self.maxima[code]} minor units)")
        if len(reference) > REFERENCE_LENGTH_MAX:
            return self._invalid(row_number, fields, INVALID_REFERENCE,
                                 f"reference is longer than {REFERENCE_LENGTH_MAX} characters")
        user_id = raw_user_id.lower()
        # The cells are kept unless they are exactly canonical_cells() of the values (tested as a pair).
        plain = (self.plain_possible and fields[self.uuid_at] == user_id
                 and fields[self.amount_at] == format_amount(amount, unit)
                 and (self.currency_at is None or fields[self.currency_at] == code)
                 and (self.reference_at is None or fields[self.reference_at] == reference))
        return Row(row_number, user_id, amount, code, reference or None, None if plain else tuple(fields))

    def _cell(self, fields: list[str], position: int | None) -> str:
        return cell_value(fields[position]) if position is not None and position < len(fields) else ""

    def _invalid(self, row_number: int, fields: list[str], code: str, message: str) -> Row:
        """An invalid row keeps its cells, and the currency (if supported) and reference it names."""
        assert code in ROW_ERROR_CODES
        currency = self._cell(fields, self.currency_at).upper() or self.default_currency
        reference = self._cell(fields, self.reference_at) or None
        return Row(row_number, None, None, currency if currency in self.currencies else None, reference,
                   tuple(fields), code, message)


def read_rows(text: io.TextIOBase, checker_for: Callable[[Header], RowChecker]) -> CsvRows:
    """Reads the header now and returns the file's columns and an iterator over every non-blank data row.

    `checker_for(header)` makes the RowChecker. Raises UnreadableFile at once when the
    header is missing or wrong, and while iterating at the first structural error (see
    csv_records.py), naming its line.
    """
    records = Records(text)
    row_number = 0
    for fields in records:
        row_number += 1
        if "".join(fields).strip():  # blank lines before the header are skipped
            header = parse_header(fields)
            return CsvRows(header.columns, _data_rows(records, checker_for(header), row_number))
    raise UnreadableFile("the file is empty: the first row must be a header such as uuid,amount")


def _data_rows(records: Records, checker: RowChecker, header_row_number: int) -> Iterator[Row]:
    row_number = header_row_number
    for fields in records:
        row_number += 1
        if not "".join(fields).strip():
            continue  # a blank line or a row of empty cells: a spreadsheet row, not a record
        yield checker.check(row_number, fields)
