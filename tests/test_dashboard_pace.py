"""Rows per second and the time left of a running activity: the pure computation
(web/display.py), then the dashboard's list, the activity's page and its live stream on the
real PostgreSQL, with chunks applied by the test."""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.bulk import chunks
from tests.test_bulk_pipeline import CHUNK_ROWS, query, seed_users
from tests.test_dashboard import activity_id_of, events_of, operator, operator_token, queue, upload  # noqa: F401
from tests.test_dashboard_payouts import text_of
from web.display import NOT_MEASURABLE, Pace, eta_text, pace, pace_shown, rate_text

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


def running(seconds_ago: float, successful: int, failed: int = 0, cancelled: int = 0, pending: int = 0,
            status: str = "PROCESSING") -> dict:
    started = (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
    return {"status": status, "started_at": started, "successful_records": successful, "failed_records": failed,
            "cancelled_records": cancelled, "pending_records": pending}


def test_the_pace_is_rows_settled_since_the_start_and_the_time_left_is_the_pending_rows_at_that_pace():
    measured = pace(running(100, successful=9_000, failed=500, cancelled=500, pending=30_000), NOW)

    assert measured == Pace(rows_per_s=100.0, eta_s=300.0)
    assert (rate_text(measured), eta_text(measured)) == ("100 rows/s", "5 min 00 s")


def test_large_rates_and_long_waits_get_thousands_separators_and_small_ones_a_decimal():
    assert pace_shown(running(10, successful=1_234_560, pending=1_250 * 3_600 * 123_456), NOW) == {
        "pace_rate": "123,456 rows/s", "pace_eta": "1,250 h 00 min"}
    assert pace_shown(running(40, successful=10, pending=7), NOW) == {"pace_rate": "0.2 rows/s", "pace_eta": "28 s"}
    assert eta_text(Pace(1.0, 3_725.2)) == "1 h 02 min" and eta_text(Pace(1.0, 0)) == "0 s"


def test_the_pace_is_not_shown_when_not_running_or_not_yet_measurable():
    dash = {"pace_rate": NOT_MEASURABLE, "pace_eta": NOT_MEASURABLE}
    assert NOT_MEASURABLE == "—"
    for activity in (running(60, successful=10, pending=5, status="COMPLETED"),
                     running(60, successful=10, pending=5, status="AWAITING_APPROVAL"),
                     {**running(60, successful=10, pending=5), "started_at": None},
                     running(60, successful=0, pending=100),  # nothing settled yet
                     running(0.2, successful=10, pending=100)):  # just started: noise
        assert pace_shown(activity, NOW) == dash, activity


@pytest.fixture
def small_chunks(services, app):
    """The app with chunks of CHUNK_ROWS rows, so that a file of two chunks can be half paid."""
    original = services.settings
    services.settings = dataclasses.replace(original, bulk_credit_chunk_rows=CHUNK_ROWS)
    yield services.settings
    services.settings = original


def test_the_list_and_the_activity_page_show_the_pace_while_it_runs_and_a_dash_once_done(
        services, small_chunks, operator, queue, engine):
    settings = small_chunks
    users = seed_users(services, 2 * CHUNK_ROWS)
    activity_id = activity_id_of(upload(operator, ("uuid,amount\n" + "".join(f"{u},1.00\n" for u in users)).encode()))
    first, *rest = queue.take()
    chunks.apply_chunk(services.uow, settings, first)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE bulk_activities SET started_at = now() - interval '100 seconds'")

    listed = text_of(operator.get("/dashboard/").text)
    page = text_of(operator.get(f"/dashboard/activities/{activity_id}").text)
    stream = operator.get(f"/dashboard/activities/{activity_id}/events", buffered=False)
    [(name, sent)] = events_of(iter(stream.response), 1)
    stream.close()

    # 50 rows in about 100 s: 0.5 rows/s, and 50 rows left take about 100 s more.
    assert re.search(r"PROCESSING .*? 0\.5 rows/s 1 min 4\d s", listed), listed
    assert re.search(r"Pace 0\.5 rows/s · time left 1 min 4\d s", page), page
    assert name == "progress" and sent["pace_rate"] == "0.5 rows/s" and sent["pace_eta"].startswith("1 min 4")
    for chunk_id in rest:
        chunks.apply_chunk(services.uow, settings, chunk_id)
    done = text_of(operator.get(f"/dashboard/activities/{activity_id}").text)
    assert "COMPLETED" in done and "Pace — · time left —" in done
    assert re.search(r"COMPLETED .*? — — ", text_of(operator.get("/dashboard/").text))
