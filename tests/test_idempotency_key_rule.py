"""One Idempotency-Key rule at every door: the HTTP header, the command line's
`--idempotency-key` and the upload use case refuse a key over 255 characters or with a NUL
(a 4xx or exit 1 naming the key, never a traceback), and a money movement refuses a blank key
(`idempotency_key_missing`); nothing is stored or moved by a refused request."""
from __future__ import annotations

import io

import pytest

from pipeline.bulk.upload import upload
from pipeline.errors import IdempotencyKeyMissing, ValidationFailed
from pipeline.text import parse_idempotency_key
from pipeline.users import create_api_key
from tests.test_bulk_pipeline import query

LONG = "k" * 256


def test_the_rule_strips_a_key_and_refuses_what_cannot_be_one():
    assert parse_idempotency_key("  k-1 ") == "k-1" and parse_idempotency_key("k" * 255) == "k" * 255
    assert parse_idempotency_key(" ", required=False) is None and parse_idempotency_key(None, required=False) is None
    with pytest.raises(IdempotencyKeyMissing):
        parse_idempotency_key("   ")
    for bad in (LONG, "a\x00b"):
        with pytest.raises(ValidationFailed) as refused:
            parse_idempotency_key(bad, required=False, field="--idempotency-key")
        assert refused.value.errors[0].field == "--idempotency-key"


def test_the_command_line_refuses_a_long_or_blank_key_in_one_line_and_moves_nothing(app, services, tmp_path,
                                                                                     clean_database):
    admin = create_api_key(services.uow(), "admin")
    runner = app.test_cli_runner()
    top_up = ["funding", "top-up", "default", "--amount", "1.00", "--token", admin, "--idempotency-key"]
    csv = tmp_path / "a.csv"
    csv.write_text("uuid,amount\n00000000-0000-4000-8000-000000000001,1.00\n")

    long_top_up = runner.invoke(args=[*top_up, LONG])
    blank_top_up = runner.invoke(args=[*top_up, "  "])
    long_upload = runner.invoke(args=["bulk-credit", "upload", str(csv), "--idempotency-key", LONG])

    for name, result in {"long top-up": long_top_up, "blank top-up": blank_top_up, "long upload": long_upload}.items():
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output and result.exception.__class__ is SystemExit, name
    assert "--idempotency-key: at most 255 characters" in long_top_up.output
    assert "--idempotency-key: at most 255 characters" in long_upload.output
    assert "idempotency_key_missing" in blank_top_up.output
    assert query(services.engine, "SELECT count(*) FROM journal_entries") == [(0,)]
    assert query(services.engine, "SELECT count(*) FROM bulk_activities") == [(0,)]
    assert query(services.engine, "SELECT count(*) FROM idempotency_keys") == [(0,)]


def test_the_upload_use_case_refuses_a_long_key_whoever_calls_it(services, settings, queue, clean_database):
    with pytest.raises(ValidationFailed) as refused:
        upload(services.uow, queue, settings, io.BytesIO(b"uuid,amount\n"), "a.csv", LONG)
    assert refused.value.errors[0].field == "Idempotency-Key"
    assert query(services.engine, "SELECT count(*) FROM bulk_activities") == [(0,)]


def test_the_http_doors_answer_the_same_problems(http, clean_database):
    for key, code in ((LONG, "validation_failed"), ("a\x00b", "validation_failed"), ("  ", "idempotency_key_missing")):
        moved = http.post("/api/v1/wallet/deposit", json={"user_id": "00000000-0000-4000-8000-000000000001",
                                                          "amount": "1.00", "currency": "SGD"},
                          headers={"Idempotency-Key": key})
        assert moved.status_code in (400, 422) and moved.json["code"] == code, (key[:5], moved.json)
    uploaded = http.post("/api/v1/wallet/bulk-credit", data={"file": (io.BytesIO(b"uuid,amount\n"), "a.csv")},
                         headers={"Idempotency-Key": LONG})
    assert uploaded.status_code == 422 and uploaded.json["errors"] == [
        {"field": "Idempotency-Key", "message": "at most 255 characters"}]
