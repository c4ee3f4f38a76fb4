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
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO, Iterator

from pipeline.errors import FieldError, ValidationFailed
from pipeline.money import MINOR_UNITS, Currency, MoneyError, parse_amount

REQUIRED_COLUMNS = ("uuid", "amount")
OPTIONAL_COLUMNS = ("currency", "reference")
#: The longest `reference`, in characters, as for single movements.
REFERENCE_LENGTH_MAX = 200
#: How much of a rejected value is kept for the report, in characters.
RAW_VALUE_LENGTH_MAX = 100
#: The longest field the csv module accepts, in characters; longer is an unreadable file.
FIELD_LENGTH_MAX = 4096

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
ROW_ERROR_CODES = (MALFORMED_ROW, INVALID_USER_ID, UNKNOWN_USER, INVALID_AMOUNT, AMOUNT_ABOVE_MAXIMUM,
                   UNSUPPORTED_CURRENCY, INVALID_REFERENCE, DUPLICATE_REFERENCE)


class UnreadableFile(ValidationFailed):
    """The file as a whole cannot be read: no header, a bad header, not UTF-8, broken CSV."""

    code = "unreadable_file"


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: either valid (`error_code` None) or invalid with a code and a message."""

    row_number: int
    user_id: str | None
    amount_minor: int | None
    currency: str | None
    reference: str | None
    raw_user_id: str
    raw_amount: str
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Header:
    """Where each known column sits in a record."""

    positions: dict[str, int]

    @property
    def width(self) -> int:
        return len(self.positions)


def parse_header(fields: list[str]) -> Header:
    names = [field.strip().lower() for field in fields]
    errors = []
    unknown = [name for name in names if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        errors.append(FieldError("file", f"unknown columns {unknown}: allowed are uuid, amount, currency, reference"))
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        errors.append(FieldError("file", f"missing columns {missing}: the header must name uuid and amount"))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        errors.append(FieldError("file", f"repeated columns {repeated}"))
    if errors:
        raise UnreadableFile("the header row is not valid: " + "; ".join(e.message for e in errors), errors)
    return Header({name: position for position, name in enumerate(names)})


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

    def check(self, row_number: int, fields: list[str]) -> Row:
        positions = self.header.positions
        raw_user_id = fields[positions["uuid"]].strip() if len(fields) > positions["uuid"] else ""
        raw_amount = fields[positions["amount"]].strip() if len(fields) > positions["amount"] else ""
        invalid = _Invalid(row_number, raw_user_id, raw_amount)
        if len(fields) != self.header.width:
            return invalid(MALFORMED_ROW, f"expected {self.header.width} fields, found {len(fields)}")
        if not _UUID.fullmatch(raw_user_id):
            return invalid(INVALID_USER_ID, "uuid must be a user id such as 3f1c2a9e-4b7d-4c1e-9a2b-5d6e7f809a1b")
        code = fields[positions["currency"]].strip().upper() if "currency" in positions else ""
        code = code or self.default_currency
        unit = self.currencies.get(code)
        if unit is None:
            return invalid(UNSUPPORTED_CURRENCY, f"currency {code[:10]!r} is not supported: use {self.supported_text}")
        try:
            amount = parse_amount(raw_amount, unit)
        except MoneyError as error:
            return invalid(INVALID_AMOUNT, f"amount {error.reason}")
        if amount > self.maxima[code]:
            return invalid(AMOUNT_ABOVE_MAXIMUM, f"amount is above BULK_CREDIT_MAX_AMOUNT ({self.maxima[code]} minor units)")
        reference = fields[positions["reference"]].strip() if "reference" in positions else ""
        if len(reference) > REFERENCE_LENGTH_MAX:
            return invalid(INVALID_REFERENCE, f"reference is longer than {REFERENCE_LENGTH_MAX} characters")
        return Row(row_number, raw_user_id.lower(), amount, code, reference or None, raw_user_id, raw_amount)


@dataclass(frozen=True, slots=True)
class _Invalid:
    row_number: int
    raw_user_id: str
    raw_amount: str

    def __call__(self, code: str, message: str) -> Row:
        assert code in ROW_ERROR_CODES
        return Row(self.row_number, None, None, None, None, self.raw_user_id[:RAW_VALUE_LENGTH_MAX],
                   self.raw_amount[:RAW_VALUE_LENGTH_MAX], code, message)


def text_of(source: BinaryIO) -> io.TextIOWrapper:
    """Decodes UTF-8 with or without a BOM; newline='' leaves CR and LF to the csv module."""
    return io.TextIOWrapper(source, encoding="utf-8-sig", errors="strict", newline="")


def read_rows(text: io.TextIOBase, checker_for) -> Iterator[Row]:
    """Reads the header now and returns an iterator over every non-blank data row.

    `checker_for(header)` makes the RowChecker. Raises UnreadableFile at once when the
    header is missing or wrong, and while iterating when the bytes are not UTF-8 or the
    CSV is broken.
    """
    csv.field_size_limit(FIELD_LENGTH_MAX)  # process-wide, so set here where it matters
    reader = csv.reader(text, dialect="excel", strict=False, skipinitialspace=True)
    with _unreadable(reader):
        header_fields, row_number = next(reader, None), 1
        while header_fields is not None and not any(field.strip() for field in header_fields):
            header_fields, row_number = next(reader, None), row_number + 1  # blank lines before the header
    if header_fields is None:
        raise UnreadableFile("the file is empty: the first row must be a header such as uuid,amount")
    checker = checker_for(parse_header(header_fields))
    return _data_rows(reader, checker, row_number)


@contextlib.contextmanager
def _unreadable(reader):
    try:
        yield
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"the file is not UTF-8 text (after line {reader.line_num}): {error.reason}") from error
    except csv.Error as error:
        raise UnreadableFile(f"the CSV cannot be read at line {reader.line_num}: {error}") from error


def _data_rows(reader, checker: RowChecker, header_row_number: int) -> Iterator[Row]:
    row_number = header_row_number
    with _unreadable(reader):
        for fields in reader:
            row_number += 1
            if not any(field.strip() for field in fields):
                continue  # a blank line or a row of empty cells: a spreadsheet row, not a record
            yield checker.check(row_number, fields)
