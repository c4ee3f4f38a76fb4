"""Paying out safely from the dashboard: check a file, upload it, approve or reject it.

"Check file" runs the same dry run as the API's `dry_run=true` (pipeline/bulk/preview.py)
on the file and options the operator picked, and answers the home page with its preview;
nothing is stored. The page's script sends the check in the background and keeps the file
picked, so that "Upload" then sends the same file with the same options; without the
script, the check is a page of its own and the file is picked again to upload. Each check
renders a new `upload_key`, sent with the upload as its Idempotency-Key: a second click,
or a form submitted twice, finds the first upload's activity instead of storing the file
again (which `allow_duplicate_content` would otherwise allow).

An activity not yet released shows its review (pipeline/bulk/review.py): totals and the
funding verdict, with Approve and Reject for approver and admin keys. Refusals (the
uploader's own key: same_approver; decided already: invalid_state; funding short:
insufficient_funds) come back as a message on the activity's page, with their code.
"""
from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from bootstrap import app_services as services
from pipeline import funding
from pipeline.bulk import approval, chunks, preview, reads, review
from pipeline.bulk.ports import Actor
from pipeline.bulk.status import ACTIVITY_STATUSES, AWAITING_APPROVAL, AWAITING_FUNDS, SCHEDULED
from pipeline.bulk.upload import checked_funding_account, upload
from pipeline.errors import FieldError, Rejected, ValidationFailed
from pipeline.text import storable
from telemetry.metrics import count_rows
from web import bulk_credit
from web.display import when
from web.problems import HttpProblem

#: Activities listed per page of the home page, newest first.
ACTIVITIES_PER_PAGE = 20
#: Funding accounts the upload form suggests by name.
FUNDING_ACCOUNTS_LISTED_MAX = 100
#: Status changes shown on an activity's page (the API's history lists them all).
HISTORY_SHOWN_MAX = 50
#: What an `upload_key` may look like: what `new_upload_key` makes, nothing a form could abuse.
UPLOAD_KEY_PATTERN = re.compile(r"dashboard-[A-Za-z0-9_-]{32}")
#: Statuses in which nothing is reserved yet, whose page shows what the file would take.
REVIEWED_STATUSES = (AWAITING_APPROVAL, SCHEDULED, AWAITING_FUNDS)

#: One sentence per activity status, for the activity's page ({execute_at} and
#: {funding_account} are the activity's).
EXPLANATIONS = {
    "UPLOADED": "Stored and released: its total is reserved from the funding account and workers start paying it.",
    "AWAITING_APPROVAL": "Waiting for approval: a key of scope approver or admin, other than the uploader's, "
                         "approves or rejects it. Nothing is reserved or paid until then.",
    "SCHEDULED": "Scheduled: it is released at {execute_at}; nothing is reserved or paid until then.",
    "AWAITING_FUNDS": "Waiting for funds: the funding account {funding_account} holds less than the file, so "
                      "nothing moved. Once the account is topped up, the scheduler releases it.",
    "PROCESSING": "Being paid: workers credit its rows chunk by chunk.",
    "COMPLETED": "Completed: every valid row was credited.",
    "PARTIALLY_COMPLETED": "Partially completed: some valid rows failed. Retry them, or cancel them: their "
                           "reserved money then goes back to the funding account.",
    "FAILED": "Failed: no valid row was credited.",
    "REJECTED": "Rejected by an approver: nothing moved.",
    "CANCELLED": "Cancelled: the rows not yet paid were cancelled and their reserved money went back to the "
                 "funding account; rows already credited stay credited.",
}
#: Where a reversal's sentence differs from a credit's: its rows take money back.
REVERSAL_EXPLANATIONS = {
    "UPLOADED": "Started: workers take the money of its rows back to the funding account.",
    "PROCESSING": "Being reversed: workers take the money of its rows back, chunk by chunk.",
    "COMPLETED": "Completed: the money of every reversible row is back in the funding account.",
    "PARTIALLY_COMPLETED": "Partially completed: some rows failed (a wallet that no longer holds the money fails "
                           "insufficient_funds). Retry them later, or cancel them.",
    "FAILED": "Failed: no row was reversed (rows already reversed, or never credited, are not_reversible).",
}


def register(blueprint: Blueprint) -> None:
    """Adds this module's pages to the dashboard's blueprint (its sign-in and CSRF checks apply)."""
    blueprint.add_url_rule("/uploads/check", "check_file", check_file, methods=["POST"])
    blueprint.add_url_rule("/uploads", "upload_file", upload_file, methods=["POST"])
    blueprint.add_url_rule("/activities/<activity_id>/approve", "approve", approve, methods=["POST"])
    blueprint.add_url_rule("/activities/<activity_id>/reject", "reject", reject, methods=["POST"])


def require(allowed: bool, detail: str) -> None:
    """A 403 page unless `allowed`: the pages hide what a key may not do, the routes refuse it."""
    if not allowed:
        raise HttpProblem(403, "forbidden", detail)


def require_operator() -> None:
    require(g.principal.may_operate(), f"A key of scope {g.principal.scope} cannot upload, retry or cancel files: "
                                       "sign in with an operator or admin key.")


def new_upload_key() -> str:
    return f"dashboard-{secrets.token_urlsafe(24)}"


def render_home(status: int = 200, **context):
    """The home page: the upload form (with a fresh upload_key), a check's outcome if any, and
    the activities newest first, of one status if `?status=` names one (an approver's queue:
    AWAITING_APPROVAL), a page at a time."""
    shown = request.args.get("status") or None
    filters = reads.ActivityFilters.parse(shown, None, None, None)
    found, next_cursor = reads.activities_page(services().uow(), filters, ACTIVITIES_PER_PAGE,
                                               request.args.get("cursor"))
    accounts = funding.accounts_page(services().uow(), FUNDING_ACCOUNTS_LISTED_MAX, None).items
    context.setdefault("form", {"funding_account": funding.DEFAULT_ACCOUNT})
    return render_template("dashboard/home.html", recent=[bulk_credit.render_activity(each) for each in found],
                           next_cursor=next_cursor, shown_status=filters.statuses[0] if filters.statuses else None,
                           statuses=ACTIVITY_STATUSES, accounts=[a["name"] for a in accounts],
                           upload_key=new_upload_key(), **context), status


def parse_execute_at(raw: str | None) -> datetime | None:
    """The form's `execute_at`: an <input type=datetime-local> sends no offset, and the form
    labels it UTC; a value with an offset is taken as it is. Checked as the API checks it."""
    if raw is None or not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return bulk_credit.parse_execute_at(raw)  # raises ValidationFailed naming the field
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return bulk_credit.parse_execute_at(moment.isoformat())


def _options(form) -> tuple[str, datetime | None, bool]:
    """(funding account, execute_at, allow_duplicate_content) from the upload form; ValidationFailed."""
    return (checked_funding_account(form.get("funding_account")), parse_execute_at(form.get("execute_at")),
            form.get("allow_duplicate_content") == "true")


def _echo(form) -> dict:
    """The options as the operator typed them, to fill the form again."""
    return {name: form.get(name, "") for name in ("funding_account", "execute_at", "allow_duplicate_content")}


def check_file():
    """The dry run of the picked file with the picked options: the home page with its preview."""
    require_operator()
    file = request.files.get("file")
    form = _echo(request.form)
    if file is None or not file.filename:
        refusal = ValidationFailed("choose a CSV file to check", [FieldError("file", "required")])
        return render_home(refusal.status, form=form, refusal=refusal)
    try:
        account, execute_at, allow_duplicate_content = _options(request.form)
        checked = preview.preview(services().uow, services().settings, file.stream, funding_account=account,
                                  allow_duplicate_content=allow_duplicate_content)
    except Rejected as refusal:
        return render_home(refusal.status, form=form, refusal=refusal, file_name=file.filename)
    return render_home(form=form, checked=checked, file_name=file.filename, execute_at=execute_at)


def _upload_key(form) -> str:
    key = form.get("upload_key", "")
    if not UPLOAD_KEY_PATTERN.fullmatch(key):
        raise ValidationFailed("the form is out of date: reload the page and pick the file again",
                               [FieldError("upload_key", "use the form as the dashboard renders it")])
    return key


def upload_file():
    """Stores the file as an activity (the same use case as the API) and opens its page."""
    require_operator()
    file = request.files.get("file")
    if file is None or not file.filename:
        flash("Choose a CSV file to upload.", "error")
        return redirect(url_for("dashboard.home"))
    try:
        account, execute_at, allow_duplicate_content = _options(request.form)
        uploaded = upload(services().uow, bulk_credit.chunk_queue(), services().settings, file.stream,
                          file.filename, _upload_key(request.form), g.principal.api_key_id, execute_at,
                          funding_account=account, allow_duplicate_content=allow_duplicate_content)
    except Rejected as refusal:
        flash(f"The file was refused: {described(refusal)}", "error")
        return redirect(url_for("dashboard.home"))
    if uploaded.created:
        count_rows("INVALID", uploaded.activity.counters.invalid)
    else:
        flash("This file was uploaded before; here is its activity. Nothing was credited twice.", "info")
    return redirect(url_for("dashboard.activity", activity_id=uploaded.activity.id))


def described(refusal: Rejected) -> str:
    """A refusal as a sentence: its detail, the fields it names, and its stable code."""
    fields = "; ".join(f"{error.field}: {error.message}" for error in refusal.errors)
    return f"{refusal.detail}{f' ({fields})' if fields else ''} [{refusal.code}]"


def reason_of(form) -> str:
    """The reason a cancel or a reject gives; ValidationFailed unless 1 to CANCEL_REASON_LENGTH_MAX characters."""
    reason = (form.get("reason") or "").strip()
    if not 1 <= len(reason) <= bulk_credit.CANCEL_REASON_LENGTH_MAX or not storable(reason):
        raise ValidationFailed("say why", [FieldError(
            "reason", f"a text of 1 to {bulk_credit.CANCEL_REASON_LENGTH_MAX} characters")])
    return reason


def approve(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    require(g.principal.may_approve(), "Only a key of scope approver or admin can approve a file.")
    try:
        outcome = approval.approve(services().uow, bulk_credit.chunk_queue(), services().settings, activity_id,
                                   Actor("api_key", g.principal.api_key_id))
    except Rejected as refusal:
        if refusal.status == 404:
            raise
        flash(f"Not approved: {described(refusal)}", "error")
    else:
        flash("Approved: it is released at its execute_at." if outcome.status == SCHEDULED else
              "Approved: its total is reserved from the funding account and workers are paying it.", "info")
    return redirect(url_for("dashboard.activity", activity_id=activity_id))


def reject(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    require(g.principal.may_approve(), "Only a key of scope approver or admin can reject a file.")
    try:
        ended = approval.reject(services().uow, services().settings, activity_id,
                                Actor("api_key", g.principal.api_key_id), reason_of(request.form))
    except Rejected as refusal:
        if refusal.status == 404:
            raise
        flash(f"Not rejected: {described(refusal)}", "error")
    else:
        flash(f"Rejected: nothing moved; its {ended.counters.cancelled:,} rows will not be paid.", "info")
    return redirect(url_for("dashboard.activity", activity_id=activity_id))


def state_of(activity: dict) -> dict:
    """What the activity's page shows about its status: a sentence, the review of an activity
    not yet released, its history, and which buttons this key may use."""
    activity_id = activity["activity_id"]
    reviewed = (review.review(services().uow(), activity_id) if activity["status"] in REVIEWED_STATUSES
                else None)
    history = reads.history_page(services().uow(), activity_id, HISTORY_SHOWN_MAX, None)
    principal = g.principal
    sentences = {**EXPLANATIONS, **REVERSAL_EXPLANATIONS} if activity["kind"] == "reversal" else EXPLANATIONS
    explanation = sentences.get(activity["status"], activity["status"]).format(
        execute_at=when(activity["execute_at"]), funding_account=activity["funding_account"])
    return {"explanation": explanation, "review": reviewed,
            "history": history.items, "history_more": history.next_cursor is not None,
            "may_operate": principal.may_operate(), "may_approve": principal.may_approve(),
            "own_upload": activity["uploaded_by"] is not None and activity["uploaded_by"] == principal.api_key_id}
