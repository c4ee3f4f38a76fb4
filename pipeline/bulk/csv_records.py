"""A CSV file as records of cells, refusing whatever is not CSV instead of reading it as data.

A structural error refuses the whole file (422 `unreadable_file`) and names the line to
look at, because reading on would put the wrong money in the wrong place:

- bytes that are not UTF-8 (a latin-1 or UTF-16 export, a multi-byte character cut short);
- a NUL character, which PostgreSQL's `text` cannot store (a UTF-16 file without a BOM,
  read as UTF-8, is full of them);
- a quote opened and never closed, or text after a closing quote (`"a"b`). The csv module
  runs in strict mode: its lenient mode reads an unclosed quote as one cell holding every
  line after it, so the rows below it get neither money nor an outcome;
- a cell longer than FIELD_LENGTH_MAX, or a record longer than RECORD_LENGTH_MAX
  characters (which also bounds the memory one record can take).

Decoding uses `surrogateescape`: a byte that is not UTF-8 reaches the line check as a lone
surrogate, and is reported with its exact line rather than from inside the decoder's
read-ahead, where the line is unknown. Strict UTF-8 never yields a surrogate, so every
surrogate found is such a byte.

Cells also follow one spreadsheet convention both ways: an export prefixes `'` to a cell a
spreadsheet would run as a formula (OWASP's advice against CSV injection), and a cell read
back drops that one `'`, so an exported file uploads the values it was made from.
"""
from __future__ import annotations

import csv
import io
import re
from typing import BinaryIO, Iterator

from pipeline.errors import FieldError, ValidationFailed

#: The longest cell, in characters; longer is an unreadable file.
FIELD_LENGTH_MAX = 4096
#: The longest record (all its lines), in characters; longer is an unreadable file.
RECORD_LENGTH_MAX = 16 * FIELD_LENGTH_MAX
#: Characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_SURROGATE = re.compile("[\ud800-\udfff]")
_UTF16_BOMS = ("\udcff\udcfe", "\udcfe\udcff")


class UnreadableFile(ValidationFailed):
    """The file as a whole cannot be read: no header, a bad header, not UTF-8, broken CSV.

    `errors` always names the field `file`, with the same message as `detail`.
    """

    code = "unreadable_file"

    def __init__(self, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail, errors or [FieldError("file", detail)])


def text_of(source: BinaryIO) -> io.TextIOWrapper:
    """Decodes UTF-8 with or without a BOM; newline='' leaves CR and LF to the csv module."""
    return io.TextIOWrapper(source, encoding="utf-8-sig", errors="surrogateescape", newline="")


class Records:
    """The records of a CSV text, blank ones included, each a list of cells.

    Raises UnreadableFile while iterating, naming the line, for any structural error.
    """

    def __init__(self, text: io.TextIOBase):
        self.text = text
        self.lines_read = 0
        #: The line the record being read starts on (1 = the first line of the file).
        self.record_line = 1
        self._record_chars = 0
        csv.field_size_limit(FIELD_LENGTH_MAX)  # process-wide, so set here where it matters
        self._reader = csv.reader(self._lines(), dialect="excel", strict=True, skipinitialspace=False)

    def __iter__(self) -> "Records":
        return self

    def __next__(self) -> list[str]:
        self.record_line, self._record_chars = self.lines_read + 1, 0
        try:
            return next(self._reader)
        except csv.Error as error:
            raise self._broken(str(error)) from error

    def _lines(self) -> Iterator[str]:
        readline = self.text.readline
        while line := readline(RECORD_LENGTH_MAX + 1):  # never more than one record's worth in memory
            self.lines_read += 1
            self._record_chars += len(line)
            if self._record_chars > RECORD_LENGTH_MAX:
                raise UnreadableFile(f"the record that starts on line {self.record_line} is longer than "
                                     f"{RECORD_LENGTH_MAX} characters (by line {self.lines_read})")
            if "\x00" in line:
                raise UnreadableFile(f"line {self.lines_read} holds a NUL character, which cannot be stored: "
                                     "if the file is UTF-16, save it as CSV UTF-8")
            if not line.isascii() and (found := _SURROGATE.search(line)):
                raise UnreadableFile(self._not_utf8(line, found.start()))
            yield line

    def _not_utf8(self, line: str, position: int) -> str:
        if self.lines_read == 1 and line.startswith(_UTF16_BOMS):
            return "the file is UTF-16 text, not UTF-8: save it as CSV UTF-8"
        byte = ord(line[position]) - 0xDC00
        return (f"line {self.lines_read} is not UTF-8 text (byte 0x{byte:02x} at character {position + 1}): "
                "save the file as CSV UTF-8")

    def _broken(self, reason: str) -> UnreadableFile:
        start, end = self.record_line, self.lines_read
        if reason == "unexpected end of data":
            return UnreadableFile(f"line {start} opens a quote that is never closed: the file ends inside it "
                                  f"(at line {end})")
        if reason.startswith("field larger than field limit"):
            where = f"line {start}" if end == start else f"the record that starts on line {start} (by line {end})"
            hint = "" if end == start else f": is a quote left open on line {start}?"
            return UnreadableFile(f"{where} has a cell longer than {FIELD_LENGTH_MAX} characters{hint}")
        if "expected after" in reason:
            return UnreadableFile(f"line {end} has text after a closing quote, such as \"a\"b: quote the whole "
                                  "cell and double the quotes inside it (\"a\"\"b\")")
        return UnreadableFile(f"the CSV cannot be read at line {end}: {reason}")


def cell_value(cell: str) -> str:
    """What a cell holds: padding stripped, and a `'` before a formula character dropped.

    cell_value(spreadsheet_safe(cell)) == cell_value(cell) for every cell, even after a CSV
    writer and reader (which may drop leading spaces) in between.
    """
    value = cell.lstrip()  # the right end only at the end: the formula character may be a tab
    while value[:1] == "'" and value[1:2] in FORMULA_PREFIXES:
        value = value[1:].lstrip()
    return value.rstrip()


def spreadsheet_safe(cell: object) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula; cell_value() reads it back."""
    text = "" if cell is None else str(cell)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
