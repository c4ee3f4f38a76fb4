"""What makes two files the same: the payments their rows ask for, not their bytes.

A file opened in a spreadsheet and saved again changes its bytes (CRLF line endings, other
quoting, a BOM, padding in cells, a trailing newline or not, blank lines, `100.00` saved as
`100`, columns moved) but not its payments; uploaded again, it must find the first activity
rather than pay every row a second time. So the content hash is taken over each row as
read (rows.py), in the file's order:

- a valid row by its values: user id (lower case), amount in minor units, currency (the
  default one when the file has no currency column) and reference;
- an invalid row by its cells as cell_value() reads them, put in the order uuid, amount,
  currency, reference when it has the header's width (annotation columns are ignored, as
  the upload ignores them), else all its cells in the file's order.

Decided: the order of the columns does not matter (the same rows with columns moved are
the same payments) but the order of the rows does (a file sorted differently is another
file; `reference` is what protects a payout against that, since it is unique across
files). Blank lines are not rows, so they do not count either.

Each part is written with its length, so no cell can imitate a separator.
"""
from __future__ import annotations

import hashlib

from pipeline.bulk.csv_records import cell_value
from pipeline.bulk.rows import INPUT_COLUMNS, Row


class RowsDigest:
    """The SHA-256 of a file's rows, fed one Row at a time: memory stays constant."""

    def __init__(self, columns: tuple[str, ...]):
        #: Where each input column sits in a record of the header's width (None: absent).
        self.positions = [columns.index(name) if name in columns else None for name in INPUT_COLUMNS]
        self.width = len(columns)
        self.sha256 = hashlib.sha256()

    def add(self, row: Row) -> None:
        if row.error_code is None:
            reference = row.reference or ""
            self.sha256.update(f"v{row.user_id}|{row.amount_minor}|{row.currency}|{len(reference)}:{reference}\n"
                               .encode("utf-8", "surrogateescape"))
            return
        cells = row.cells or ()
        if len(cells) == self.width:
            kind, values = "i", ["" if at is None else cell_value(cells[at]) for at in self.positions]
        else:
            kind, values = "m", [cell_value(cell) for cell in cells]
        self.sha256.update((kind + "".join(f"{len(value)}:{value}" for value in values) + "\n")
                           .encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()
