"""After the money has moved, from the dashboard: reverse a credit (operator and admin keys).

"Reverse" runs the same use case as `POST /api/v1/wallet/bulk-credit/{id}/reverse`
(pipeline/bulk/reversal.py), through the same idempotent answer (pipeline/idempotency.py):
each render of an activity's page carries a new `reverse_key`, sent as the request's
Idempotency-Key, so a second click, a second tab of the same form, or a form sent twice
replays the first answer and never creates a second reversal. A refusal is an answer too,
shown with its message and code as the API answers it.
"""
from __future__ import annotations

import re
import secrets

from flask import Blueprint, flash, g, redirect, request, url_for

from bootstrap import app_services as services
from pipeline.bulk import chunks, reads, reversal
from pipeline.bulk.ports import Actor, send_after_commit
from pipeline.errors import FieldError, Rejected, ValidationFailed
from pipeline.idempotency import IdempotentRequest, answer_once, request_sha256
from web import bulk_credit
from web.dashboard_payouts import described, reason_of, require_operator
from web.problems import refusal_body

#: What a `reverse_key` may look like: what `new_reverse_key` makes, nothing a form could abuse.
REVERSE_KEY_PATTERN = re.compile(r"dashboard-reverse-[A-Za-z0-9_-]{32}")
#: The longest row-number field the form takes, in characters (a range names many rows in few).
ROW_NUMBERS_LENGTH_MAX = 20_000
_ROW_NUMBER_ITEM = re.compile(r"(\d{1,10})(?:\s*-\s*(\d{1,10}))?")


def register(blueprint: Blueprint) -> None:
    """Adds this module's actions to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/activities/<activity_id>/reverse", "reverse", reverse, methods=["POST"])


def new_reverse_key() -> str:
    return f"dashboard-reverse-{secrets.token_urlsafe(24)}"


def parse_row_numbers(raw: str | None) -> list[int] | None:
    """The form's row numbers, "2, 5, 10-12" (as a spreadsheet shows them), or None when blank
    (every SUCCESS row). Raises ValidationFailed naming `row_numbers`; reversal.parse_named_rows
    then checks them as the API does (at least 2, at most NAMED_ROWS_MAX in all)."""
    text = (raw or "").strip()
    if not text:
        return None
    refused = ValidationFailed("the rows to reverse are not valid", [FieldError(
        "row_numbers", "row numbers as a spreadsheet shows them, separated by commas or spaces; "
                       "a range as 10-20")])
    if len(text) > ROW_NUMBERS_LENGTH_MAX:
        raise refused
    numbers: list[int] = []
    for item in re.split(r"\s*[,;\s]\s*", text):
        match = _ROW_NUMBER_ITEM.fullmatch(item)
        if match is None:
            raise refused
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first or len(numbers) + (last - first + 1) > reversal.NAMED_ROWS_MAX:
            raise ValidationFailed("the rows to reverse are not valid", [FieldError(
                "row_numbers", f"ranges from low to high, at most {reversal.NAMED_ROWS_MAX:,} rows in all")])
        numbers.extend(range(first, last + 1))
    return numbers


def _reverse_key(form) -> str:
    key = form.get("reverse_key", "")
    if not REVERSE_KEY_PATTERN.fullmatch(key):
        raise ValidationFailed("the form is out of date: reload the page and try again",
                               [FieldError("reverse_key", "use the form as the dashboard renders it")])
    return key


def reverse(activity_id):
    """Starts the reversal of a credit, once per form, and opens its page; a refusal comes back
    on the credit's page with its message and code."""
    activity_id = chunks.parse_activity_id(activity_id)
    require_operator()
    reads.activity(services().uow(), activity_id)  # an unknown activity is a 404 page, not a stored answer
    back = redirect(url_for("dashboard.activity", activity_id=activity_id))
    try:
        body = {"reason": reason_of(request.form)}
        row_numbers = parse_row_numbers(request.form.get("row_numbers"))
        if row_numbers is not None:
            body["row_numbers"] = row_numbers
        named, _ = reversal.parse_named_rows(body)
        key = _reverse_key(request.form)
    except Rejected as refusal:
        flash(f"Nothing was reversed: {described(refusal)}", "error")
        return back
    actor, settings, planned = Actor("api_key", g.principal.api_key_id), services().settings, []

    def act(uow):
        done = reversal.reverse(uow, settings, activity_id=activity_id, actor=actor, reason=body["reason"],
                                row_numbers=named)
        planned[:] = done.chunk_ids  # a transient fault runs this again: the last run's chunks
        return done.activity

    # The API's path in the request's digest: the same body through either door is the same request.
    once = IdempotentRequest(g.principal.api_key_id, key, request_sha256(
        "POST", f"/api/v1/wallet/bulk-credit/{activity_id}/reverse", body))
    (status, answer), replayed = answer_once(
        services().uow, settings.transaction_attempts_max, once, act,
        lambda activity: (202, bulk_credit.render_activity(activity)), lambda refusal: (refusal.status, refusal_body(refusal)))
    if planned:
        send_after_commit(bulk_credit.chunk_queue(), planned)
    if status >= 400:
        fields = "; ".join(f"{error['field']}: {error['message']}" for error in answer.get("errors", []))
        flash(f"Nothing was reversed: {answer['detail']}{f' ({fields})' if fields else ''} [{answer['code']}]",
              "error")
        return back
    if replayed:
        flash("This form was sent before; here is the reversal it started. Nothing was reversed twice.", "info")
    else:
        flash(f"Reversal started: {answer['valid_records']:,} rows to take back, {answer['invalid_records']:,} "
              f"not reversible.", "info")
    return redirect(url_for("dashboard.activity", activity_id=answer["activity_id"]))
