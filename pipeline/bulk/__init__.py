"""Bulk credit: a CSV of `uuid,amount[,currency][,reference]` becomes one outcome per row.

How a file flows (see ../shared/API.md, "Bulk credit"):

1. **Upload** (`upload.py`, one database transaction). The bytes are read once, as a
   stream: hashed (`file_sha256`), counted against `BULK_CREDIT_MAX_BYTES`, decoded
   and parsed by `rows.py`, and written with COPY as they come. A structural error
   (`csv_records.py`: broken quoting, bytes that are not UTF-8, NUL, an oversized cell)
   refuses the whole file and rolls the transaction back. Rows that break a rule
   one line can show (bad uuid, bad amount, ...) are stored INVALID with a code and
   their original cells, so they can be exported, corrected and uploaded again; rules
   that need the whole file or the database (unknown user, a reference already used in
   the funding account) run afterwards as set-based SQL. Valid rows are numbered into
   chunks of `BULK_CREDIT_CHUNK_ROWS`, the chunks are recorded, and only after the commit
   is one message per chunk sent (`ChunkQueue`). The same rows (`content.py`:
   `content_sha256`, whatever the bytes) or the same Idempotency-Key find the existing
   activity instead, unless `allow_duplicate_content`.
2. **Apply** (`chunks.py`, one database transaction per chunk). Under the chunk's row
   lock, a chunk that is DONE is left alone (a message delivered twice, two workers on
   one chunk); otherwise its PENDING rows are credited with a constant number of
   statements: one journal entry per currency with one posting per row plus one debit
   of a `bulk_funding` shard picked by chunk id, so concurrent chunks debit different
   rows. `postings.bulk_row_id` is UNIQUE: the ledger itself refuses a second credit.
   Rows that cannot be applied become FAILED with a code and leave the others alone.
3. **Retry** (`chunks.py`). FAILED rows go back to PENDING and their chunks are sent
   again, under the activity's row lock, so two retries at once re-queue each row once.

`status.py` holds the activity's state machine and counters, `ports.py` what the use
cases need from storage and from the queue.
"""
