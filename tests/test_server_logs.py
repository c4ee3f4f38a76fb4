"""What PostgreSQL's own log keeps: no email of a user, even when a duplicate is refused
(issue 8, finding 14). Reads the log file of the real server the tests use."""
from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import text


def server_log(engine) -> Path:
    """The log file scripts/services.sh starts PostgreSQL with (`pg_ctl -l <data>/server.log`)."""
    with engine.connect() as connection:
        data_directory = connection.execute(text("SHOW data_directory")).scalar_one()
        collector_file = connection.execute(text("SELECT pg_current_logfile()")).scalar_one()
    path = Path(data_directory) / (collector_file or "server.log")
    assert path.is_file(), f"PostgreSQL's log is not at {path}"
    return path


def test_a_duplicate_email_or_external_id_answers_409_and_never_reaches_the_database_log(engine, client,
                                                                                        admin_token):
    log = server_log(engine)
    logged_before = log.stat().st_size
    email, external_id = f"dup-{uuid.uuid4().hex}@example.com", f"ext-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {admin_token}"}

    first = client.post("/api/v1/users", json={"name": "Ana", "email": email, "external_id": external_id},
                        headers=headers)
    same_email = client.post("/api/v1/users", json={"name": "Ana", "email": email.upper()}, headers=headers)
    same_external_id = client.post("/api/v1/users", json={"name": "Ana", "email": f"x{email}",
                                                          "external_id": external_id}, headers=headers)

    assert first.status_code == 201
    assert (same_email.status_code, same_email.get_json()["code"]) == (409, "conflict")
    assert "email" in same_email.get_json()["detail"]
    assert same_external_id.status_code == 409 and "external_id" in same_external_id.get_json()["detail"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 1
    with open(log, "rb") as written:
        written.seek(logged_before)
        since = written.read().decode(errors="replace")
    assert email not in since and external_id not in since
