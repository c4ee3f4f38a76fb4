"""What a preview (dry run) reads of the rows it stored in a transaction it never commits."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text

_TOTALS = text("""
SELECT currency, count(*), sum(amount_minor) FROM bulk_rows
 WHERE activity_id = :activity_id AND status = 'PENDING' GROUP BY currency ORDER BY currency
""")

_FIRST_ERRORS = text("""
SELECT row_number, error_code, error_message FROM bulk_rows
 WHERE activity_id = :activity_id AND status = 'INVALID' ORDER BY row_number LIMIT :limit
""")


class PreviewSql:
    connection: Any

    def valid_totals(self, activity_id: str) -> list[tuple[str, int, int]]:
        """[(currency, valid rows, their amount in minor units)]"""
        return [(c.strip(), rows, int(amount))
                for c, rows, amount in self.connection.execute(_TOTALS, {"activity_id": activity_id})]

    def first_errors(self, activity_id: str, limit: int) -> list[tuple[int, str, str]]:
        return [tuple(row) for row in self.connection.execute(_FIRST_ERRORS, {"activity_id": activity_id,
                                                                              "limit": limit})]
