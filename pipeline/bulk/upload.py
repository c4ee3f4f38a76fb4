"""Upload: a CSV stream becomes an activity, its rows and its chunks, in one database transaction.

The bytes are read once. The hash that finds a re-uploaded file is computed as they
stream by, so a duplicate is only known at the end: its transaction is then rolled back
(nothing of it stays) and the existing activity is returned instead. Messages go out
after the commit; if that send fails, the chunks' leases expire and the scheduler sends
them again (the database, not the queue, says what is left to do).
"""
from __future__ import annotations

import hashlib
import io
import logging
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Callable, Iterator

from pipeline.bulk.ports import Activity, Actor, ChunkQueue, DuplicateContent, DuplicateKey, send_after_commit
from pipeline.bulk.release import admit
from pipeline.bulk.rows import Row, RowChecker, read_rows, text_of
from pipeline.bulk.status import SETTLED_STATUSES, Counters, status_after_upload
from pipeline.config import Settings
from pipeline.errors import IdempotencyKeyReused, Rejected
from pipeline.text import storable

log = logging.getLogger(__name__)

#: How many bytes the parser asks the upload stream for at a time.
READ_BYTES = 256 * 1024
#: The longest file name kept, in characters (the rest is cut: it is a label, not data).
FILE_NAME_LENGTH_MAX = 200
#: The message of rows whose user does not exist at upload time.
UNKNOWN_USER_MESSAGE = "no user has this uuid"


class TooLarge(Rejected):
    code = "payload_too_large"
    status = 413


@dataclass(frozen=True)
class Uploaded:
    activity: Activity
    #: False when the same content or Idempotency-Key found an existing activity.
    created: bool


class _HashingReader(io.RawIOBase):
    """A binary stream that hashes and counts what passes through, up to `max_bytes`."""

    def __init__(self, source: BinaryIO, max_bytes: int):
        self.source, self.max_bytes = source, max_bytes
        self.size_bytes = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        self.size_bytes += len(data)
        if self.size_bytes > self.max_bytes:
            raise TooLarge(f"the file is larger than BULK_CREDIT_MAX_BYTES ({self.max_bytes} bytes)")
        self.sha256.update(data)
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> str:
        while self.read(READ_BYTES):
            pass
        return self.sha256.hexdigest()


class _Tally:
    """Counts rows as they stream to COPY and numbers valid ones into chunks."""

    def __init__(self, chunk_rows: int, max_rows: int):
        self.chunk_rows, self.max_rows = chunk_rows, max_rows
        self.total = self.invalid = 0
        #: Valid rows with a `reference`: none means no duplicate check is needed.
        self.references = 0

    def number(self, rows: Iterator[Row]) -> Iterator[tuple[Row, int | None]]:
        for row in rows:
            self.total += 1
            if self.total > self.max_rows:
                raise TooLarge(f"the file has more than BULK_CREDIT_MAX_ROWS ({self.max_rows}) rows")
            if row.error_code is None:
                self.references += row.reference is not None
                yield row, (self.total - self.invalid - 1) // self.chunk_rows
            else:
                self.invalid += 1
                yield row, None


def upload(uow_factory: Callable, queue: ChunkQueue, settings: Settings, source: BinaryIO,
           file_name: str | None = None, idempotency_key: str | None = None,
           api_key_id: int | None = None, execute_at: datetime | None = None) -> Uploaded:
    reader = _HashingReader(source, settings.bulk_credit_max_bytes)
    if idempotency_key is not None:
        with uow_factory() as uow:
            existing = uow.bulk.find_by_idempotency_key(api_key_id, idempotency_key)
        if existing is not None:
            return _replay(existing, reader.drain())
    content_sha256 = _hash_ahead(source, settings.bulk_credit_max_bytes)
    if content_sha256 is not None:
        with uow_factory() as uow:
            existing = uow.bulk.find_by_content(content_sha256)
        if existing is not None:
            return Uploaded(existing, created=False)
    activity_id = str(uuid.uuid4())
    try:
        chunk_ids = _store(uow_factory(), settings, reader, activity_id, file_name, idempotency_key, api_key_id,
                           execute_at)
    except DuplicateKey:
        with uow_factory() as uow:
            return _replay(uow.bulk.find_by_idempotency_key(api_key_id, idempotency_key), reader.drain())
    except DuplicateContent:
        with uow_factory() as uow:
            return Uploaded(uow.bulk.find_by_content(reader.sha256.hexdigest()), created=False)
    send_after_commit(queue, chunk_ids)
    with uow_factory() as uow:
        return Uploaded(uow.bulk.activity(activity_id), created=True)


def _hash_ahead(source: BinaryIO, max_bytes: int) -> str | None:
    """The content hash of a seekable source (an upload spooled to disk), read before parsing
    so that a duplicate costs one pass of hashing, not a rolled-back COPY; None otherwise."""
    try:
        if not source.seekable():
            return None
        start = source.tell()
    except (AttributeError, OSError, ValueError):
        return None
    digest, size_bytes = hashlib.sha256(), 0
    while data := source.read(READ_BYTES):
        size_bytes += len(data)
        if size_bytes > max_bytes:
            raise TooLarge(f"the file is larger than BULK_CREDIT_MAX_BYTES ({max_bytes} bytes)")
        digest.update(data)
    source.seek(start)
    return digest.hexdigest()


def _replay(existing: Activity, content_sha256: str) -> Uploaded:
    if existing.content_sha256 != content_sha256:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different file")
    return Uploaded(existing, created=False)


def _store(uow, settings: Settings, reader: _HashingReader, activity_id: str, file_name, key, api_key_id,
           execute_at: datetime | None = None):
    text = text_of(io.BufferedReader(reader, buffer_size=READ_BYTES))
    rows = read_rows(text, lambda header: RowChecker(
        header, settings.supported_currencies, settings.default_currency, settings.bulk_credit_max_amount))
    tally = _Tally(settings.bulk_credit_chunk_rows, settings.bulk_credit_max_rows)
    with uow:
        uow.bulk.add_activity(activity_id, api_key_id, key, storable_name(file_name), rows.columns)
        uow.bulk.copy_rows(activity_id, tally.number(rows))
        reader.drain()  # whatever trails the last record still belongs to the hash
        invalid = tally.invalid + uow.bulk.invalidate_unknown_users(activity_id, UNKNOWN_USER_MESSAGE)
        if tally.references:
            invalid += uow.bulk.invalidate_duplicate_references(activity_id)
        valid = tally.total - invalid
        counters = Counters(tally.total, valid, invalid, 0, 0, valid)
        status = status_after_upload(counters)
        uow.bulk.finish_upload(activity_id, reader.sha256.hexdigest(), reader.size_bytes, counters, status)
        uploader = Actor("api_key", api_key_id) if api_key_id is not None else Actor("command_line")
        uow.bulk.add_history(activity_id, None, status, status in SETTLED_STATUSES, uploader)
        if execute_at is not None:
            uow.bulk.set_execute_at(activity_id, execute_at)
        # Held for approval or until execute_at, or released at once: its total is reserved
        # from the funding account, or it waits for funds.
        chunk_ids = admit(uow, settings, activity_id, uploader, execute_at)
        uow.commit()
    return chunk_ids


def storable_name(file_name: str | None) -> str | None:
    """The upload's file name as PostgreSQL can store it and a page can show it: characters
    it cannot store (NUL, a lone surrogate from a name that was not UTF-8), control and
    format characters (a newline, U+202E that reverses the text shown after it) become U+FFFD."""
    if not file_name:
        return None
    name = file_name[:FILE_NAME_LENGTH_MAX]
    return "".join(character if storable(character) and unicodedata.category(character) not in ("Cc", "Cf")
                   else "\ufffd" for character in name)
