"""The audit trail's storage: one event per action, in the action's transaction, never rewritten."""
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pipeline import audit
from pipeline.audit import Actor
from storage.unit_of_work import SqlUnitOfWork


def events(engine):
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT actor_type, api_key_id, action, object_type, object_id, detail FROM audit_events ORDER BY id"
        )).all()


def test_an_event_is_stored_with_its_actor_and_detail(clean_database):
    with clean_database.begin() as connection:
        key_id = connection.execute(text(
            "INSERT INTO api_keys (token_sha256, scope) VALUES ('x', 'admin') RETURNING id")).scalar_one()
    with SqlUnitOfWork(clean_database) as uow:
        audit.record(uow, Actor("api_key", key_id), "hold.capture", "hold", "h-1", amount=1250, reason="ok")
        uow.commit()
    assert events(clean_database) == [
        ("api_key", key_id, "hold.capture", "hold", "h-1", {"amount": 1250, "reason": "ok"})]


def test_an_action_that_rolls_back_leaves_no_event(clean_database):
    with SqlUnitOfWork(clean_database) as uow:
        audit.record(uow, audit.COMMAND_LINE, "api_key.create", "api_key", "7")
    assert events(clean_database) == []


def test_an_event_cannot_be_rewritten_or_deleted(clean_database):
    with SqlUnitOfWork(clean_database) as uow:
        audit.record(uow, audit.SCHEDULER, "hold.expire", "hold", "h-2")
        uow.commit()
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with clean_database.begin() as connection:
                connection.exec_driver_sql(statement)
    assert len(events(clean_database)) == 1


def test_an_api_key_actor_needs_its_key_and_no_other_actor_has_one(clean_database):
    with pytest.raises(DBAPIError, match="check"):
        with SqlUnitOfWork(clean_database) as uow:
            audit.record(uow, Actor("api_key"), "bulk_credit.approve", "activity", "a")
