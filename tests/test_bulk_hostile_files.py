"""Property: no file, however hostile, makes the upload answer 500 or miscount its records.

Hypothesis builds CSV files with random quoting (closed, unclosed, text after the closing
quote), delimiters, encodings (UTF-8 with and without a BOM, latin-1, cp1252, UTF-16),
NUL and other control characters, CR, LF and CRLF line endings, very long cells, and
multi-byte characters cut short, and posts each to the upload endpoint on the real
PostgreSQL (a stub chunk queue stands in for the workers). Every file answers 202 (or 200
for a file seen before) or a 4xx. When it is accepted, `total_records` is what Python's
csv module reads in strict mode (the non-blank records after the header), and the row
outcomes add up to it. A file the strict csv module cannot read is never accepted.
"""
from __future__ import annotations

import csv
import io
import sys

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from pipeline.bulk.csv_records import Records, cell_value, spreadsheet_safe, text_of
from pipeline.bulk.rows import RowChecker, canonical_cells, read_rows
from tests.test_bulk_pipeline import RecordingQueue

URL = "/api/v1/wallet/bulk-credit"
#: Users every generated file may name; seeded once per test.
USER_COUNT = 5
USERS = [f"00000000-0000-4000-8000-00000000000{number}" for number in range(USER_COUNT)]

HEADERS = ["uuid,amount", "uuid,amount,reference", "uuid,amount,currency,reference", "amount,uuid",
           "UUID , Amount", '"uuid","amount"']
BAD_HEADERS = ["uuid;amount", "uuid,amount,name", "", "uuid", "\ufeffuuid,amount"]
#: Characters that keep a file readable CSV (inside quotes or not), and ones that never do.
FRAGMENTS = ['"', ",", ";", "\t", "\n", "\r", "\r\n", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff",
             "é", "€", "𝄞", "'", "=", " ", "SGD", "JPY", "10.00"]
ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-16-le"]


def sometimes(draw, one_in: int) -> bool:
    return draw(st.integers(1, one_in)) == 1


def plain_cells():
    return st.one_of(st.sampled_from(USERS), st.sampled_from(["10.00", "1", "0.5", "-3", "1e3", "", " ", "SGD", "jpy"]),
                     st.text(max_size=12))


@st.composite
def cell(draw, faults: set[str]) -> str:
    text = draw(plain_cells())
    if sometimes(draw, 4):
        text = "".join(draw(st.lists(st.one_of(st.sampled_from(FRAGMENTS), plain_cells()), max_size=6)))
    if "nul" in faults and sometimes(draw, 8):
        text += "\x00"
    if "long" in faults and sometimes(draw, 8):
        text = "9" * draw(st.integers(4_000, 4_200))
    style = draw(st.sampled_from(["plain", "plain", "quoted"] + (["unclosed", "after"] if "quotes" in faults else [])))
    if style == "quoted":
        return '"' + text.replace('"', '""') + '"'
    if style == "unclosed":
        return '"' + text
    if style == "after":
        return '"' + text + '"x'
    return text


@st.composite
def hostile_files(draw) -> bytes:
    """Mostly readable files with hostile cells; about half also carry a fault that no reader
    should get past (broken quotes, NUL, long cells, another encoding, a cut, a bad header)."""
    faults = {fault for fault in ("quotes", "nul", "long", "encoding", "cut", "header", "record") if sometimes(draw, 12)}
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    lines = [draw(st.sampled_from(BAD_HEADERS if "header" in faults else HEADERS))]
    for _ in range(draw(st.integers(0, 12))):
        lines.append(delimiter.join(draw(cell(faults)) for _ in range(draw(st.integers(1, 5)))))
    if "record" in faults:
        lines.append(",".join([USERS[0], "1.00", "r" * 70_000]))  # a record past RECORD_LENGTH_MAX
    endings = [draw(st.sampled_from(["\n", "\r\n", "\r"])) if ending == "mixed" else ending for _ in lines]
    text = "".join(line + end for line, end in zip(lines, endings))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line ending after the last record
    encoding = draw(st.sampled_from(ENCODINGS)) if "encoding" in faults else draw(st.sampled_from(["utf-8", "utf-8-sig"]))
    data = text.encode(encoding, errors="replace")
    if "cut" in faults and data:
        data = data[:draw(st.integers(0, len(data) - 1))]  # anywhere, even inside a character
    return data


def strict_record_count(data: bytes) -> int | None:
    """The non-blank records after the header, as the strict csv module reads them; None if it
    cannot read the file (not UTF-8, broken quoting) or finds no header."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    limit = csv.field_size_limit(sys.maxsize)  # the csv module's own reading, not the app's limits
    try:
        records = [fields for fields in csv.reader(io.StringIO(text, newline=""), dialect="excel", strict=True,
                                                   skipinitialspace=False) if any(field.strip() for field in fields)]
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(limit)
    return len(records) - 1 if records else None


@pytest.fixture
def http(app, admin_token, services):
    app.extensions["wallet.chunk_queue"] = RecordingQueue()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    with services.uow() as uow:
        uow.bulk.copy_users((user_id, "Hostile file", f"{user_id}@example.test") for user_id in USERS)
        uow.commit()
    return client


def all_rows(http, activity_id: str) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = http.get(f"{URL}/{activity_id}/rows?limit=100" + (f"&cursor={cursor}" if cursor else "")).json
        rows += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=hostile_files())
@example(data=f'uuid,amount,reference\n{USERS[0]},10.00,"Bonus Q3\n{USERS[1]},1.00,b\n{USERS[2]},1.00,c\n'.encode())
@example(data=b'uuid,amount\n' + USERS[0].encode() + b',"1.00"x\n')
@example(data=f'uuid,amount,reference\n{USERS[0]},10.00, "Bonus Q3\n{USERS[1]},20.00,R2"\n{USERS[2]},3.00,R3\n'.encode())
@example(data=f'uuid,amount,reference\n{USERS[0]},1.00, ""\t\n'.encode())
@example(data="uuid,amount\n".encode("utf-16"))
def test_every_hostile_file_is_accepted_with_every_record_counted_or_refused_with_a_4xx(http, data):
    response = http.post(URL, data={"file": (io.BytesIO(data), "hostile.csv")}, content_type="multipart/form-data")

    assert response.status_code in (200, 202) or 400 <= response.status_code < 500, response.get_data()
    expected = strict_record_count(data)
    event(f"answered {response.status_code}" + (f" {response.json['code']}" if response.status_code >= 400 else ""))
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json" and response.json["code"]
        return
    assert expected is not None, "a file the strict csv module cannot read was accepted"
    assert response.json["total_records"] == expected
    activity = http.get(f"{URL}/{response.json['activity_id']}").json
    assert activity["valid_records"] + activity["invalid_records"] == activity["total_records"] == expected
    rows = all_rows(http, response.json["activity_id"])
    assert len(rows) == expected
    assert sum(row["status"] == "INVALID" for row in rows) == activity["invalid_records"]
    assert sum(row["status"] == "PENDING" for row in rows) == activity["valid_records"]


@given(cell=st.text())
@example(cell="\t")  # the formula character is also whitespace: the `'` before it must not stay alone
@example(cell=" '=x")
def test_a_cell_escaped_against_formulas_reads_back_as_the_value_it_held(cell):
    buffer = io.StringIO()
    csv.writer(buffer).writerow([spreadsheet_safe(cell), "x"])
    [[read_back, _]] = list(csv.reader(io.StringIO(buffer.getvalue(), newline=""), strict=True,
                                       skipinitialspace=False))
    assert cell_value(read_back) == cell_value(cell)


@given(columns=st.permutations(["uuid", "amount", "currency", "reference"]).flatmap(
           lambda order: st.integers(2, 4).map(lambda width: [c for c in order if c in ("uuid", "amount")]
                                                + [c for c in order if c not in ("uuid", "amount")][:width - 2])),
       rows=st.lists(st.fixed_dictionaries({
           "uuid": st.sampled_from(USERS + [USERS[0].upper(), " " + USERS[1]]),
           "amount": st.sampled_from(["10.00", "10", "0.50", " 1.00", "007.00", "1200", "12.5"]),
           "currency": st.sampled_from(["SGD", "sgd", "", "JPY", " SGD"]),
           "reference": st.sampled_from(["", "r-1", " r-2 ", "'=x", "=x"])}), min_size=1, max_size=8))
def test_a_valid_row_without_stored_cells_has_exactly_the_cells_its_values_are_written_as(columns, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([[row[column] for column in columns] for row in rows])
    data = buffer.getvalue().encode()
    [_, *records] = list(Records(text_of(io.BytesIO(data))))
    parsed = list(read_rows(text_of(io.BytesIO(data)),
                            lambda header: RowChecker(header, frozenset({"SGD", "JPY"}), "SGD", "1000000.00")))

    for row, fields in zip(parsed, records):
        if row.error_code is None:
            written = canonical_cells(columns, row.user_id, row.amount_minor, row.currency, row.reference)
            assert (row.cells is None) == (written == fields)
            assert row.cells is None or list(row.cells) == fields
