"""A multipart upload read as a stream, where the part named `file` is the file with or
without a filename.

Werkzeug's form parser makes a part a file only when it has a filename. `curl -F
'file=<payouts.csv'` sends none, so the CSV landed in `request.form`, where the limit on
form fields held in memory (500 KB) answered 413 for a file far below
BULK_CREDIT_MAX_BYTES. Here the file part is spooled to disk past SPOOL_MEMORY_BYTES, as
Werkzeug spools files, so the web process never holds the file; every other part is a
small form field.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO

from flask import Request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from pipeline.errors import FieldError, ValidationFailed
from pipeline.bulk.upload import TooLarge

#: Bytes of the file part kept in memory before it is spooled to a temporary file.
SPOOL_MEMORY_BYTES = 500 * 1024
#: Bytes read from the request at a time.
READ_BYTES = 64 * 1024
#: Bytes of every part but the file, together: a few short form fields.
FIELDS_BYTES_MAX = 64 * 1024
#: Parts a form may have.
PARTS_MAX = 16
#: Bytes the body may hold besides the file: boundaries, part headers, the other fields.
#: Also the most the multipart decoder buffers at once (a part's headers, a read).
FORM_OVERHEAD_BYTES = 1024 * 1024

#: What a true/false form field may say.
#: A true/false form field is one of these, exactly (OpenAPI: enum). Anything else, the empty
#: value of `-F dry_run=$UNSET` included, is refused: a preview must never turn into a payout.
FLAG_VALUES = {"false": False, "true": True}

assert READ_BYTES * 4 < FORM_OVERHEAD_BYTES and FIELDS_BYTES_MAX < FORM_OVERHEAD_BYTES


@dataclass
class Upload:
    """The file (positioned at its start; None if the form had no such part) and the other fields."""

    file: BinaryIO | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> bool:
        """A true/false form field (absent: false); ValidationFailed naming it for any other value."""
        value = self.fields.get(name, "false")
        if value not in FLAG_VALUES:
            raise ValidationFailed(f"{name} must be true or false", [FieldError(
                name, "must be exactly true or false; leave the field out for false")])
        return FLAG_VALUES[value]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read_upload(request: Request, file_field: str, file_max_bytes: int) -> Upload:
    """Reads the multipart body of `request`; the part named `file_field` is the file.

    Sets the request's own body limit (file_max_bytes + FORM_OVERHEAD_BYTES), whatever the
    app's limit for other routes. Raises TooLarge (413) past file_max_bytes, and
    ValidationFailed (422) for a body that is not valid multipart or sends the file twice.
    A body that is not multipart at all gives an Upload without a file.
    """
    boundary = request.mimetype_params.get("boundary", "")
    if request.mimetype != "multipart/form-data" or not boundary:
        return Upload()
    request.max_content_length = file_max_bytes + FORM_OVERHEAD_BYTES
    reader = _PartReader(file_field, file_max_bytes)
    try:
        decoder = MultipartDecoder(boundary.encode("latin-1"), FORM_OVERHEAD_BYTES, max_parts=PARTS_MAX)
        while True:
            data = request.stream.read(READ_BYTES)
            decoder.receive_data(data or None)
            event = decoder.next_event()
            while not isinstance(event, (Epilogue, NeedData)):
                reader.take(event)
                event = decoder.next_event()
            if not data or isinstance(event, Epilogue):
                break
    except (ValueError, UnicodeError) as error:  # the decoder's way to say "not multipart"
        reader.upload.close()
        raise ValidationFailed(f"the multipart body cannot be read: {str(error)[:200]}",
                               [FieldError(file_field, "send the CSV as a multipart form field")]) from error
    except BaseException:
        reader.upload.close()
        raise
    if reader.upload.file is not None:
        reader.upload.file.seek(0)
    return reader.upload


class _PartReader:
    """Sends each part's data to the spooled file or to a bounded field."""

    def __init__(self, file_field: str, file_max_bytes: int):
        self.file_field, self.file_max_bytes = file_field, file_max_bytes
        self.upload = Upload()
        self.file_bytes = self.field_bytes = 0
        self.field_name: str | None = None
        self.field_data: list[bytes] = []

    def take(self, event) -> None:
        if isinstance(event, (Field, File)):
            self._start(event)
        elif isinstance(event, Data):
            self._write(event.data)
            if not event.more_data and self.field_name is not None:
                value = b"".join(self.field_data).decode("utf-8", "replace")
                if self.field_name in self.upload.fields:  # which one was meant? never guess
                    raise ValidationFailed(f"the form field '{self.field_name}' is sent twice",
                                           [FieldError(self.field_name, "send it once")])
                self.upload.fields[self.field_name] = value

    def _start(self, part: Field | File) -> None:
        self.field_name, self.field_data = None, []
        if part.name != self.file_field:
            self.field_name = part.name or ""
            return
        if self.upload.file is not None:
            raise ValidationFailed(f"send one file in the form field '{self.file_field}'",
                                   [FieldError(self.file_field, "sent more than once")])
        self.upload.file = tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES)
        self.upload.filename = getattr(part, "filename", None) or None

    def _write(self, data: bytes) -> None:
        if self.field_name is None:
            self.file_bytes += len(data)
            if self.file_bytes > self.file_max_bytes:
                raise TooLarge(f"the file is larger than BULK_CREDIT_MAX_BYTES ({self.file_max_bytes} bytes)")
            self.upload.file.write(data)
            return
        self.field_bytes += len(data)
        if self.field_bytes > FIELDS_BYTES_MAX:
            raise TooLarge(f"the form fields besides '{self.file_field}' are larger than {FIELDS_BYTES_MAX} bytes")
        self.field_data.append(data)
