"""Bulk credit over HTTP: upload a CSV, follow its activity, read or export row outcomes, retry."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

from apiflask import APIBlueprint
from flask import Response, current_app, g, jsonify, request, stream_with_context

from bootstrap import app_services as services
from pipeline.bulk import approval, chunks, preview, reads, release, reversal
from pipeline.bulk.ports import Activity, Actor, send_after_commit
from pipeline.bulk.upload import upload
from pipeline.errors import FieldError, ValidationFailed
from pipeline.statements import parse_limit
from pipeline.text import parse_idempotency_key
from telemetry.metrics import BULK_ROW_RETRIES, count_rows
from web.auth import allow, authenticated
from web.inputs import rfc3339_field
from web.uploads import read_upload
from web.wallets import idempotent, json_body, money, reason_in, rfc3339

#: The longest reason a cancel may give, in characters.
CANCEL_REASON_LENGTH_MAX = 500

blueprint = APIBlueprint("bulk_credit", __name__, url_prefix="/api/v1/wallet/bulk-credit", tag="Bulk credit")


def chunk_queue():
    """The queue that chunk messages go to; tests may put their own in app.extensions."""
    queue = current_app.extensions.get("wallet.chunk_queue")
    if queue is None:
        from actors import redis_broker
        from actors.bulk_credit import ChunkMessages

        queue = current_app.extensions["wallet.chunk_queue"] = ChunkMessages(
            redis_broker(services().settings.redis_url))
    return queue


def render_activity(activity: Activity) -> dict:
    counters = activity.counters
    moment = lambda value: rfc3339(value) if value else None  # noqa: E731
    return {
        "activity_id": activity.id, "kind": activity.kind, "reverses": activity.reverses, "file_name": activity.file_name, "status": activity.status, "total_records": counters.total,
        "valid_records": counters.valid, "invalid_records": counters.invalid,
        "successful_records": counters.successful, "failed_records": counters.failed,
        "pending_records": counters.pending, "cancelled_records": counters.cancelled, "final": activity.final,
        "funding_account": activity.funding_account, "uploaded_by": activity.uploaded_by,
        "approved_by": activity.approved_by, "execute_at": moment(activity.execute_at),
        "next_retry_at": moment(activity.next_retry_at), "failed_chunks": activity.failed_chunks,
        "last_chunk_error": activity.last_chunk_error, "created_at": moment(activity.created_at),
        "started_at": moment(activity.started_at), "completed_at": moment(activity.completed_at),
        "totals": [{"currency": t.currency, "valid_amount": money(t.valid, t.currency),
                    "credited_amount": money(t.credited, t.currency), "failed_amount": money(t.failed, t.currency),
                    "cancelled_amount": money(t.cancelled, t.currency)} for t in activity.totals],
    }


def render_row(outcome: dict) -> dict:
    """A row outcome (pipeline.bulk.reads.row_outcome) as JSON: already plain values."""
    return outcome


@blueprint.post("")
@authenticated
def upload_file():
    allow(g.principal.may_operate())
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"), required=False)
    # The part named `file` is the file with or without a filename (curl -F 'file=<x.csv' sends
    # none); it is spooled to disk past 500 KB, so memory stays flat, and read as a stream.
    if request.args:  # options are form fields: `?dry_run=true` must not pay the file
        raise ValidationFailed("the upload takes its options as form fields, not in the query", [
            FieldError(name, "send it as a multipart form field") for name in sorted(request.args)])
    form = read_upload(request, "file", services().settings.bulk_credit_max_bytes)
    try:
        if form.file is None:
            raise ValidationFailed("send the CSV as the multipart form field 'file'", [FieldError("file", "required")])
        refuse_unsupported_options(form.fields)
        execute_at = parse_execute_at(form.fields.get("execute_at"))  # checked by a preview too
        if form.flag("dry_run"):
            checked = preview.preview(services().uow, services().settings, form.file,
                                      funding_account=form.fields.get("funding_account"),
                                      allow_duplicate_content=form.flag("allow_duplicate_content"))
            return jsonify(render_preview(checked)), 200
        uploaded = upload(services().uow, chunk_queue(), services().settings, form.file, form.filename, key,
                          g.principal.api_key_id, execute_at, funding_account=form.fields.get("funding_account"),
                          allow_duplicate_content=form.flag("allow_duplicate_content"))
    finally:
        form.close()
    if uploaded.created:
        count_rows("INVALID", uploaded.activity.counters.invalid)
        return jsonify({"activity_id": uploaded.activity.id, "status": "accepted",
                        "total_records": uploaded.activity.counters.total}), 202
    return jsonify(render_activity(uploaded.activity)), 200


#: Upload form fields besides `file` (API.md); any other field is refused, so that a
#: misspelt option never pays a file its sender meant to check or hold. None: any value,
#: checked where it is read.
UPLOAD_OPTIONS = {"funding_account": None, "dry_run": None, "execute_at": None, "allow_duplicate_content": None}


def render_preview(checked: preview.Preview) -> dict:
    as_money = lambda minor, code: money(minor, code)  # noqa: E731
    return {
        "dry_run": True, "total_records": checked.total_records, "valid_records": checked.valid_records,
        "invalid_records": checked.invalid_records, "funding_account": checked.funding_account,
        "totals": [{"currency": t.currency, "rows": t.rows, "amount": as_money(t.amount, t.currency)}
                   for t in checked.totals],
        "funding": [{"currency": f.currency, "required": as_money(f.required, f.currency),
                     "available": as_money(f.available, f.currency), "sufficient": f.sufficient}
                    for f in checked.funding],
        "needs_approval": checked.needs_approval, "duplicate_of": checked.duplicate_of,
        "errors": [{"row_number": n, "error_code": code, "error_message": message}
                   for n, code, message in checked.errors],
        "errors_shown_max": preview.PREVIEW_ERRORS_MAX,
    }
#: How far ahead `execute_at` may be, in days.
EXECUTE_AT_AHEAD_DAYS_MAX = 366
#: How far in the past `execute_at` may be, in seconds: clock skew, never a year typo that pays at once.
EXECUTE_AT_PAST_S_MAX = 300


def parse_execute_at(raw: str | None) -> datetime | None:
    """`execute_at` as RFC 3339 with a UTC offset, at most EXECUTE_AT_AHEAD_DAYS_MAX ahead and
    EXECUTE_AT_PAST_S_MAX ago (a moment just past releases the file at once). Raises ValidationFailed."""
    if raw is None:
        return None
    moment = rfc3339_field(raw, "execute_at")  # a blank one is refused: it must not mean "pay now"
    now = datetime.now(timezone.utc)
    if moment > now + timedelta(days=EXECUTE_AT_AHEAD_DAYS_MAX):
        raise ValidationFailed("execute_at is too far ahead", [FieldError(
            "execute_at", f"at most {EXECUTE_AT_AHEAD_DAYS_MAX} days ahead")])
    if moment < now - timedelta(seconds=EXECUTE_AT_PAST_S_MAX):
        raise ValidationFailed("execute_at is in the past", [FieldError(
            "execute_at", f"at most {EXECUTE_AT_PAST_S_MAX} s ago; leave it out to pay now")])
    return moment.astimezone(timezone.utc)


def refuse_unsupported_options(fields: dict[str, str]) -> None:
    errors = []
    for name, value in sorted(fields.items()):
        if name not in UPLOAD_OPTIONS:
            errors.append(FieldError(name, f"unknown form field: send file and, optionally, {', '.join(UPLOAD_OPTIONS)}"))
        elif UPLOAD_OPTIONS[name] is not None and value.strip().lower() not in UPLOAD_OPTIONS[name]:
            allowed = " or ".join(UPLOAD_OPTIONS[name]) or "nothing"
            errors.append(FieldError(name, f"not supported by this version: send {allowed}, or leave it out"))
    if errors:
        raise ValidationFailed("the upload asks for options this version does not support", errors)


@blueprint.get("")
@authenticated
def list_activities():
    """Activities newest first, narrowed by `status` (one or several, comma-separated), a
    part of `file_name` (case-insensitive) and `created_after` <= created_at < `created_before`."""
    allow(g.principal.may_read_all())
    filters = reads.ActivityFilters.parse(
        request.args.get("status"), request.args.get("file_name"),
        rfc3339_field(request.args.get("created_after"), "created_after"),
        rfc3339_field(request.args.get("created_before"), "created_before"))
    found, next_cursor = reads.activities_page(services().uow(), filters, parse_limit(request.args.get("limit")),
                                               request.args.get("cursor"))
    return jsonify({"data": [render_activity(activity) for activity in found], "next_cursor": next_cursor})


@blueprint.get("/<activity_id>")
@authenticated
def get_activity(activity_id):
    allow(g.principal.may_read_all())
    return jsonify(render_activity(reads.activity(services().uow(), chunks.parse_activity_id(activity_id))))


@blueprint.get("/<activity_id>/rows")
@authenticated
def get_rows(activity_id):
    allow(g.principal.may_read_all())
    activity_id = chunks.parse_activity_id(activity_id)
    status = reads.parse_row_status(request.args.get("status"))
    if request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv":
        return export_response(activity_id, status)
    limit = parse_limit(request.args.get("limit"))
    page = reads.rows_page(services().uow(), activity_id, status, limit, request.args.get("cursor"))
    return jsonify({"data": [render_row(row) for row in page.items], "next_cursor": page.next_cursor})


def export_response(activity_id: str, status: str | None) -> Response:
    """The rows of an activity (of one status, or all) as a streamed CSV attachment whose name
    says which rows it holds; the INVALID rows export as a file to correct and upload again."""
    header, batches = reads.export_rows(services().uow, activity_id, status)

    def lines():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(header)
        for batch in batches:
            writer.writerows(batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    name = reads.export_file_name(activity_id, status)
    return Response(stream_with_context(lines()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@blueprint.post("/retry")
@authenticated
def retry():
    allow(g.principal.may_operate())
    activity_id = chunks.parse_activity_id(json_body().get("activity_id"))
    retried = chunks.retry_failed_rows(services().uow, chunk_queue(), services().settings, activity_id,
                                       Actor("api_key", g.principal.api_key_id))
    BULK_ROW_RETRIES.labels("endpoint").inc(retried.retried_records)
    return jsonify({"activity_id": retried.activity_id, "status": retried.status,
                    "retried_records": retried.retried_records}), 202


@blueprint.get("/<activity_id>/history")
@authenticated
def get_history(activity_id):
    """Every status change of the activity, and the moment it became final, oldest first."""
    allow(g.principal.may_read_all())
    activity_id = chunks.parse_activity_id(activity_id)
    limit = parse_limit(request.args.get("limit"))
    page = reads.history_page(services().uow(), activity_id, limit, request.args.get("cursor"))
    return jsonify({"data": [render_change(change) for change in page.items], "next_cursor": page.next_cursor})


def render_change(change: dict) -> dict:
    actor = {"type": change["actor_type"], "api_key_id": change["api_key_id"]}
    return {"at": rfc3339(change["at"]), "from_status": change["from_status"], "to_status": change["to_status"],
            "final": change["final"], "actor": actor, "reason": change["reason"]}


@blueprint.post("/<activity_id>/cancel")
@authenticated
def cancel(activity_id):
    """Ends the activity's PENDING and FAILED rows CANCELLED and returns their reserved money
    to the funding account; rows already credited stay credited."""
    allow(g.principal.may_operate())
    activity_id = chunks.parse_activity_id(activity_id)
    ended = release.cancel(services().uow, services().settings, activity_id,
                           Actor("api_key", g.principal.api_key_id), _reason())
    return jsonify(render_activity(ended)), 202


@blueprint.post("/<activity_id>/approve")
@authenticated
def approve(activity_id):
    """Maker-checker: a key other than the uploader's, of scope approver or admin, releases
    the file (its funds are reserved) or schedules it for its execute_at."""
    allow(g.principal.may_approve())
    activity_id = chunks.parse_activity_id(activity_id)
    approval.approve(services().uow, chunk_queue(), services().settings, activity_id,
                     Actor("api_key", g.principal.api_key_id))
    return jsonify(render_activity(reads.activity(services().uow(), activity_id))), 202


@blueprint.post("/<activity_id>/reject")
@authenticated
def reject(activity_id):
    """Rejects a file awaiting approval: its rows end CANCELLED and nothing moves."""
    allow(g.principal.may_approve())
    activity_id = chunks.parse_activity_id(activity_id)
    ended = approval.reject(services().uow, services().settings, activity_id,
                            Actor("api_key", g.principal.api_key_id), _reason())
    return jsonify(render_activity(ended)), 200


def _reason() -> str:
    return _reason_in(json_body())


def _reason_in(body: dict) -> str:
    return reason_in(body, CANCEL_REASON_LENGTH_MAX)


@blueprint.post("/<activity_id>/reverse")
@authenticated
def reverse(activity_id):
    """A new activity of kind `reversal` taking the money of the credit's SUCCESS rows (every
    one, or those named by `row_numbers` or `references`) back to its funding account; with an
    Idempotency-Key, replayed like every money movement (pipeline/bulk/reversal.py)."""
    allow(g.principal.may_operate())
    activity_id = chunks.parse_activity_id(activity_id)
    actor, settings, planned = Actor("api_key", g.principal.api_key_id), services().settings, []

    def command(body: dict):
        return _reason_in(body), *reversal.parse_named_rows(body)

    def act(uow, parsed) -> Activity:
        reason, row_numbers, references = parsed
        done = reversal.reverse(uow, settings, activity_id=activity_id, actor=actor, reason=reason,
                                row_numbers=row_numbers, references=references)
        planned[:] = done.chunk_ids  # a transient fault runs this again: the last run's chunks
        return done.activity

    response = idempotent(command, act, render_activity, status=202)
    if planned:
        send_after_commit(chunk_queue(), planned)
    return response
