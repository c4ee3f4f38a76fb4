"""Reading a bulk-credit CSV: every row error code, spreadsheet row numbers, and the file
shapes real spreadsheets produce (BOM, CRLF, quotes, blank lines, padded cells)."""
import io

import pytest

from pipeline.bulk import rows as r
from pipeline.bulk.rows import RowChecker, UnreadableFile, read_rows, text_of
from pipeline.bulk.status import COMPLETED, FAILED, PARTIALLY_COMPLETED, PROCESSING, UPLOADED, Counters
from pipeline.bulk.status import settled_status, status_after_chunk, status_after_upload
from pipeline.bulk.reads import spreadsheet_safe

ANA = "3f1c2a9e-4b7d-4c1e-9a2b-5d6e7f809a1b"
BEN = "0b8e7c6d-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


def parse(content: str | bytes, maximum: str = "1000000.00") -> list[r.Row]:
    data = content.encode() if isinstance(content, str) else content
    checker = lambda header: RowChecker(header, frozenset({"SGD", "JPY", "USD"}), "SGD", maximum)  # noqa: E731
    return list(read_rows(text_of(io.BytesIO(data)), checker))


def only(content: str, **kwargs) -> r.Row:
    [row] = parse(content, **kwargs)
    return row


@pytest.mark.parametrize("line, code", [
    ("not-a-uuid,10.00", r.INVALID_USER_ID),
    (f"{ANA[:-1]},10.00", r.INVALID_USER_ID),
    (f"{ANA},-5.00", r.INVALID_AMOUNT),
    (f"{ANA},0.00", r.INVALID_AMOUNT),
    (f"{ANA},1e3", r.INVALID_AMOUNT),
    (f"{ANA},10.005", r.INVALID_AMOUNT),
    (f"{ANA},", r.INVALID_AMOUNT),
    (f"{ANA},\"1,000.00\"", r.INVALID_AMOUNT),
    (f"{ANA},1000000.01", r.AMOUNT_ABOVE_MAXIMUM),
    (f"{ANA},10.00,extra", r.MALFORMED_ROW),
])
def test_a_row_that_breaks_a_rule_gets_its_error_code(line, code):
    row = only(f"uuid,amount\n{line}\n")
    assert (row.error_code, row.row_number) == (code, 2)
    assert row.error_message and row.user_id is None and row.amount_minor is None


@pytest.mark.parametrize("line, code", [
    (f"{ANA},10.00,EUR", r.UNSUPPORTED_CURRENCY),
    (f"{ANA},10.00,XXX", r.UNSUPPORTED_CURRENCY),
    (f"{ANA},10.5,JPY", r.INVALID_AMOUNT),
    (f"{ANA},10.00", r.MALFORMED_ROW),
])
def test_currency_rules_follow_the_rows_own_currency(line, code):
    assert only(f"uuid,amount,currency\n{line}\n").error_code == code


def test_a_reference_longer_than_the_limit_is_invalid():
    row = only(f"uuid,amount,reference\n{ANA},1.00,{'x' * 201}\n")
    assert row.error_code == r.INVALID_REFERENCE


def test_every_row_error_code_is_documented_once():
    assert len(set(r.ROW_ERROR_CODES)) == len(r.ROW_ERROR_CODES) == 9


def test_a_valid_row_carries_minor_units_its_currency_and_a_lowercase_user_id():
    [sgd, jpy] = parse(f"uuid,amount,currency,reference\n{ANA.upper()},12.50,,inv-1\n{BEN},1200,JPY,inv-2\n")
    assert (sgd.user_id, sgd.amount_minor, sgd.currency, sgd.reference, sgd.error_code) == (ANA, 1250, "SGD", "inv-1", None)
    assert (jpy.amount_minor, jpy.currency, jpy.row_number) == (1200, "JPY", 3)


def test_the_maximum_amount_applies_in_each_currencys_minor_units():
    [at_max, above] = parse(f"uuid,amount,currency\n{ANA},100,JPY\n{BEN},101,JPY\n", maximum="100")
    assert at_max.error_code is None and above.error_code == r.AMOUNT_ABOVE_MAXIMUM


def test_row_numbers_are_spreadsheet_rows_counting_blank_lines_and_multiline_cells():
    content = f'uuid,amount,reference\n{ANA},1.00,a\n\n{BEN},2.00,"two\nlines"\n,,\n{ANA},3.00,c\n'
    assert [row.row_number for row in parse(content)] == [2, 4, 6]


def test_a_utf8_bom_crlf_line_endings_quoted_fields_and_padded_cells_are_read_as_intended():
    content = f'\ufeff UUID , Amount \r\n"{ANA}"," 10.00 "\r\n  {BEN}  ,20\r\n'.encode()
    [first, second] = parse(content)
    assert (first.user_id, first.amount_minor, first.error_code) == (ANA, 1000, None)
    assert (second.user_id, second.amount_minor, second.row_number) == (BEN, 2000, 3)


def test_columns_may_come_in_any_order():
    assert only(f"amount,uuid\n5.00,{ANA}\n").amount_minor == 500


def test_a_file_with_only_a_header_has_no_rows():
    assert parse("uuid,amount\r\n") == [] and parse("uuid,amount") == []


@pytest.mark.parametrize("content, reason", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("user,amount\n", "missing columns ['uuid']"),
    ("uuid,amount,name\n", "unknown columns ['name']"),
    ("uuid,amount,amount\n", "repeated columns ['amount']"),
    (b"uuid,amount\n\xff\xfe,1\n", "line 2 is not UTF-8"),
    (f"uuid,amount\n{ANA},{'9' * 5000}\n", "line 2 has a cell longer than 4096 characters"),
    (f'uuid,amount,reference\n{ANA},10.00,"Bonus Q3\n{BEN},1.00,x\n{ANA},2.00,y\n', "line 2 opens a quote that is never closed"),
    (f'uuid,amount,reference\n{ANA},10.00,x\n{BEN},1.00,"a"b\n', "line 3 has text after a closing quote"),
    (f'uuid,amount\n{ANA},1.00\r{BEN},2.00\x00\r', "line 3 holds a NUL character"),
    ("uuid,amount\n".encode("utf-16"), "UTF-16"),
    ("uuid,amount\n".encode("utf-16-le"), "line 1 holds a NUL character"),
    (f"uuid,amount,reference\n{ANA},1.00,caf\u00e9\n".encode("latin-1"), "line 2 is not UTF-8 text (byte 0xe9"),
    (f"uuid,amount,reference\n{ANA},1.00,\u20ac\n".encode()[:-2], "line 2 is not UTF-8"),
    (b"uuid,amount\n\xed\xa0\x80,1\n", "line 2 is not UTF-8"),  # a surrogate written as UTF-8
    (f'uuid,amount,reference\n{ANA},1.00,"' + "x\n" * 3000 + '"\n', "the record that starts on line 2 (by line 2050) has a cell longer"),
    (f"uuid,amount\n{ANA}," + "1" * 70_000 + "\n", "the record that starts on line 2 is longer than 65536"),
])
def test_a_file_that_cannot_be_read_is_refused_with_the_reason(content, reason):
    with pytest.raises(UnreadableFile) as refusal:
        parse(content)
    assert reason in refusal.value.detail and refusal.value.status == 422


def test_a_bad_header_is_refused_before_any_row_is_read():
    source = io.BytesIO(b"name,amount\n" + b"x" * 10_000_000)
    text = text_of(source)
    with pytest.raises(UnreadableFile):
        read_rows(text, lambda header: None)
    assert source.tell() < 1_000_000


def test_an_invalid_row_keeps_its_cells_whole_and_what_could_be_read_of_currency_and_reference():
    row = only(f"uuid,amount,currency,reference\n{'z' * 500}, 1.00 ,jpy,Bonus Q3\n")
    assert row.cells == ("z" * 500, " 1.00 ", "jpy", "Bonus Q3") and row.error_code == r.INVALID_USER_ID
    assert (row.currency, row.reference) == ("JPY", "Bonus Q3")


def test_a_valid_row_stores_its_cells_only_when_they_differ_from_its_values_written_plainly():
    plain, padded, upper = parse(f"uuid,amount,reference\n{ANA},10.00,\n{BEN}, 10,x\n{ANA.upper()},1.00,y\n")
    assert plain.cells is None
    assert padded.cells == (BEN, " 10", "x") and upper.cells == (ANA.upper(), "1.00", "y")


def test_a_space_before_a_quote_is_part_of_an_ordinary_cell_as_in_rfc_4180():
    first, second = parse(f'uuid,amount,reference\n{ANA},1.00, "Bonus Q3\n{BEN},2.00,R2"\n')
    assert (first.reference, second.reference) == ('"Bonus Q3', 'R2"')
    assert first.cells == (ANA, "1.00", ' "Bonus Q3')


def test_a_structural_error_is_refused_whole_even_after_valid_rows():
    content = f'uuid,amount,reference\n{ANA},1.00,a\n{BEN},2.00,"b\n{ANA},3.00,c\n'
    with pytest.raises(UnreadableFile) as refusal:
        parse(content)
    assert refusal.value.errors[0].field == "file" and "line 3" in refusal.value.errors[0].message


def test_the_export_columns_of_a_correction_file_are_accepted_and_ignored_but_a_report_is_refused():
    [row] = parse(f"uuid,amount,row_number,error_code,error_message\n{ANA},1.00,3,invalid_amount,bad\n")
    assert (row.error_code, row.amount_minor) == (None, 100)
    with pytest.raises(UnreadableFile) as refusal:
        parse(f"row_number,user_id,amount,status\n2,{ANA},1.00,SUCCESS\n")
    assert "export ?status=INVALID" in refusal.value.detail


@pytest.mark.parametrize("counters, status", [
    (Counters(3, 3, 0, 3, 0, 0), COMPLETED),
    (Counters(5, 3, 2, 3, 0, 0), COMPLETED),
    (Counters(3, 3, 0, 2, 1, 0), PARTIALLY_COMPLETED),
    (Counters(3, 3, 0, 0, 3, 0), FAILED),
    (Counters(2, 0, 2, 0, 0, 0), FAILED),
    (Counters(0, 0, 0, 0, 0, 0), FAILED),
])
def test_a_settled_activity_takes_the_seeds_statuses(counters, status):
    assert settled_status(counters) == status == status_after_chunk(PROCESSING, counters)


def test_an_activity_with_pending_rows_is_uploaded_then_processing():
    counters = Counters(3, 3, 0, 1, 0, 2)
    assert status_after_upload(Counters(3, 3, 0, 0, 0, 3)) == UPLOADED
    assert status_after_chunk(UPLOADED, counters) == PROCESSING


def test_counters_that_do_not_add_up_are_a_bug():
    with pytest.raises(AssertionError):
        Counters(3, 3, 0, 2, 0, 0)


@pytest.mark.parametrize("cell, shown", [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("plain", "plain"), (None, ""), (12, "12"),
])
def test_exported_cells_cannot_run_as_spreadsheet_formulas(cell, shown):
    assert spreadsheet_safe(cell) == shown


@pytest.mark.parametrize("separator, named", [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_of_another_separator_is_refused_with_a_hint(separator, named):
    with pytest.raises(UnreadableFile) as refusal:
        parse(f"uuid{separator}amount\n{ANA}{separator}1.00\n")
    assert f"separate its cells with {named}" in refusal.value.detail
