"""Bulk credit in PostgreSQL: COPY on the way in, a constant number of set-based
statements per chunk on the way through, keyset pages on the way out.

Nothing here commits; `pipeline.bulk` opens and commits every database transaction.
"""
from __future__ import annotations

from sqlalchemy import Connection

from storage.bulk.apply import ChunkSql
from storage.bulk.outcomes import OutcomeSql
from storage.bulk.reads import ReadSql
from storage.bulk.preview import PreviewSql
from storage.bulk.recovery import RecoverySql
from storage.bulk.release import ReleaseSql
from storage.bulk.reversal import ReversalSql
from storage.bulk.upload import UploadSql


class SqlBulkCredits(UploadSql, ChunkSql, OutcomeSql, ReadSql, RecoverySql, ReleaseSql, PreviewSql,
                     ReversalSql):
    def __init__(self, connection: Connection):
        self.connection = connection
