"""`bulk-credit upload|status|approve|reject|cancel|retry|reverse`: bulk credits from a CSV file.

The commands call the same use cases as the HTTP API, in this process; messages go to
the Redis in REDIS_URL, where the workers of `make up` pick them up. `--wait` exits 0 only
when every valid row was credited, 2 for PARTIALLY_COMPLETED and 1 for anything else.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from bootstrap import app_services as services
from cli.common import CURSOR, LIMIT, TOKEN, Group, actor_of, print_page, reason_option, refused
from pipeline.bulk import approval, chunks, preview, reads, release, reversal
from pipeline.bulk.status import (AWAITING_APPROVAL, AWAITING_FUNDS, CANCELLED, PROCESSING, REJECTED, SCHEDULED,
                                  UPLOADED)
from pipeline.bulk.upload import upload
from pipeline.errors import Rejected
from pipeline.statements import parse_limit
from pipeline.text import parse_idempotency_key

bulk_credit = Group("bulk-credit", help="Bulk credits from a CSV file.")

#: How often --wait looks at the activity, in seconds.
POLL_S = 0.5
#: How long --wait waits for an activity to settle, in seconds.
WAIT_S_MAX = 3600


def queue():
    """The chunk queue on REDIS_URL, checked first: a command that would queue work fails
    before it writes anything when Redis cannot be reached."""
    from actors import redis_broker
    from actors.bulk_credit import ChunkMessages

    services().redis.ping()
    return ChunkMessages(redis_broker(services().settings.redis_url))


#: Statuses an activity leaves only when someone acts (an approver, a top-up, time).
WAITING_FOR_SOMEONE = (AWAITING_APPROVAL, SCHEDULED, AWAITING_FUNDS, REJECTED, CANCELLED)
#: `--wait` exit statuses (API.md, Command line): 0 only when every valid row was credited.
EXIT_STATUSES = {"COMPLETED": 0, "PARTIALLY_COMPLETED": 2}


def _show(activity) -> None:
    from web.bulk_credit import render_activity

    click.echo(json.dumps(render_activity(activity), indent=2))


def _settled(activity) -> bool:
    """Nothing will change without someone acting: every row has its outcome for now (a
    FAILED row may still be due an automatic retry: `final` says when none is), or the file
    waits for an approver, its execute_at or a top-up, or it was rejected or cancelled."""
    return activity.status not in (UPLOADED, PROCESSING) and activity.counters.pending == 0 or (
        activity.status in WAITING_FOR_SOMEONE)


def _wait(activity_id: str) -> None:
    activity = reads.activity(services().uow(), activity_id)
    done = lambda a: a.counters.successful + a.counters.failed  # noqa: E731
    deadline = time.monotonic() + WAIT_S_MAX
    with click.progressbar(length=activity.counters.valid or 1, label="crediting",
                           file=sys.stderr) as bar:
        bar.update(done(activity))
        while not _settled(activity) and time.monotonic() < deadline:
            time.sleep(POLL_S)
            before, activity = done(activity), reads.activity(services().uow(), activity_id)
            bar.update(done(activity) - before)


def file_name(file) -> str | None:
    """The name the activity keeps, as the HTTP upload keeps the multipart filename: the file's
    own name, never the local path to it (a home folder is nobody's business); none for stdin."""
    return None if file.name == "<stdin>" else Path(file.name).name


@bulk_credit.command("upload")
@click.argument("file", type=click.File("rb"))
@click.option("--wait", is_flag=True, help="Show progress until every row is settled.")
@click.option("--idempotency-key", default=None,
              help="The same key again returns the first activity; with other rows or another funding"
                   " account it is refused.")
@click.option("--funding-account", default="default", show_default=True, help="The funding account paying the file.")
@click.option("--dry-run", is_flag=True, help="Check the file as the upload would, store nothing, print the preview.")
@TOKEN
def upload_command(file, wait, idempotency_key, funding_account, dry_run, token):
    """Uploads a CSV (uuid,amount[,currency][,reference]) and prints its activity. With
    --token, that key is the uploader, which may then not approve the file (maker-checker).
    --wait exits 0 only for COMPLETED, 2 for PARTIALLY_COMPLETED and 1 for anything else."""
    started = time.monotonic()
    uploader = actor_of(token, "may_operate")
    try:
        idempotency_key = parse_idempotency_key(idempotency_key, required=False, field="--idempotency-key")
        if dry_run:
            from web.bulk_credit import render_preview

            checked = preview.preview(services().uow, services().settings, file, funding_account=funding_account)
            click.echo(json.dumps(render_preview(checked), indent=2))
            return
        uploaded = upload(services().uow, queue(), services().settings, file, file_name(file), idempotency_key,
                          uploader.api_key_id, funding_account=funding_account)
    except Rejected as refusal:
        refused(refusal)
    activity = uploaded.activity
    click.echo(f"activity {activity.id}: {'accepted' if uploaded.created else 'already uploaded'},"
               f" {activity.counters.total} records", err=True)
    if wait:
        _wait(activity.id)
        activity = reads.activity(services().uow(), activity.id)
        rate = activity.counters.valid / max(time.monotonic() - started, 1e-9)
        if activity.status in WAITING_FOR_SOMEONE:
            click.echo(f"activity {activity.id} is {activity.status}: nothing more happens until someone acts",
                       err=True)
        else:
            click.echo(f"settled in {time.monotonic() - started:.1f} s ({rate:,.0f} rows/s)", err=True)
        _show(activity)
        sys.exit(EXIT_STATUSES.get(activity.status, 1))
    _show(activity)


@bulk_credit.command("status")
@click.argument("activity_id")
def status_command(activity_id):
    """Prints an activity's status and counters."""
    try:
        _show(reads.activity(services().uow(), chunks.parse_activity_id(activity_id)))
    except Rejected as refusal:
        refused(refusal)


@bulk_credit.command("cancel")
@click.argument("activity_id")
@reason_option(help="Why; kept in the activity's history.")
@TOKEN
def cancel_command(activity_id, reason, token):
    """Ends the activity's rows not yet credited CANCELLED and returns their reserved money.
    With --token (or WALLET_TOKEN), that operator's or admin's key is the actor."""
    try:
        _show(release.cancel(services().uow, services().settings, chunks.parse_activity_id(activity_id),
                             actor_of(token, "may_operate"), reason))
    except Rejected as refusal:
        refused(refusal)


@bulk_credit.command("approve")
@click.argument("activity_id")
@TOKEN
def approve_command(activity_id, token):
    """Approves a file awaiting approval with an approver's or admin's key (--token or
    $WALLET_TOKEN), never the uploader's: its funds are reserved and it is released."""
    if token is None:
        raise click.ClickException("maker-checker needs the approver's API key: pass --token or set WALLET_TOKEN")
    try:
        activity_id = chunks.parse_activity_id(activity_id)
        approval.approve(services().uow, queue(), services().settings, activity_id, actor_of(token, "may_approve"))
        _show(reads.activity(services().uow(), activity_id))
    except Rejected as refusal:
        refused(refusal)


@bulk_credit.command("reject")
@click.argument("activity_id")
@reason_option(help="Why; kept in the activity's history.")
@TOKEN
def reject_command(activity_id, reason, token):
    """Rejects a file awaiting approval with an approver's or admin's key: nothing moves."""
    if token is None:
        raise click.ClickException("maker-checker needs the approver's API key: pass --token or set WALLET_TOKEN")
    try:
        _show(approval.reject(services().uow, services().settings, chunks.parse_activity_id(activity_id),
                              actor_of(token, "may_approve"), reason))
    except Rejected as refusal:
        refused(refusal)


@bulk_credit.command("retry")
@click.argument("activity_id")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Show progress until the rows are settled; exits like upload --wait.")
@TOKEN
def retry_command(activity_id, wait, token):
    """Sends an activity's FAILED rows again. With --token (or WALLET_TOKEN), that operator's or
    admin's key is the actor."""
    try:
        activity_id = chunks.parse_activity_id(activity_id)
        retried = chunks.retry_failed_rows(services().uow, queue(), services().settings, activity_id,
                                           actor_of(token, "may_operate"))
    except Rejected as refusal:
        refused(refusal)
    click.echo(f"retrying {retried.retried_records} rows of {activity_id}", err=True)
    activity = reads.activity(services().uow(), activity_id)
    if wait:
        _wait(activity_id)
        activity = reads.activity(services().uow(), activity_id)
        _show(activity)
        sys.exit(EXIT_STATUSES.get(activity.status, 1))
    _show(activity)


def _named_rows(row_numbers: tuple[int, ...], references: tuple[str, ...]) -> dict:
    """--row and --reference checked as the API checks them (ValidationFailed)."""
    rows, refs = reversal.parse_named_rows({"row_numbers": list(row_numbers) or None,
                                            "references": list(references) or None})
    return {"row_numbers": rows, "references": refs}


@bulk_credit.command("reverse")
@click.argument("activity_id")
@reason_option(help="Why; kept in the reversal's history and the audit trail.")
@click.option("--row", "row_numbers", type=int, multiple=True, help="A row number to reverse (repeatable).")
@click.option("--reference", "references", multiple=True, help="A row reference to reverse (repeatable).")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="Show progress until the reversal is settled; exits like upload --wait.")
@TOKEN
def reverse_command(activity_id, reason, row_numbers, references, wait, token):
    """Takes the money of a credit's SUCCESS rows (all, or those named) back to its funding account;
    with --token (or WALLET_TOKEN), that operator's or admin's key is the actor."""
    try:
        activity = reversal.reverse_and_send(
            services().uow, queue(), services().settings, activity_id=chunks.parse_activity_id(activity_id),
            actor=actor_of(token, "may_operate"), reason=reason, **_named_rows(row_numbers, references))
    except Rejected as refusal:
        refused(refusal)
    click.echo(f"reversal {activity.id} of {activity_id}: {activity.counters.valid} rows to reverse,"
               f" {activity.counters.invalid} not reversible", err=True)
    if wait:
        _wait(activity.id)
        activity = reads.activity(services().uow(), activity.id)
        _show(activity)
        sys.exit(EXIT_STATUSES.get(activity.status, 1))
    _show(activity)


@bulk_credit.command("list")
@click.option("--status", default=None, help="One status, or several separated by commas.")
@click.option("--file-name", "file_name", default=None, help="A part of the file's name, whatever its case.")
@click.option("--created-after", default=None, help="RFC 3339, e.g. 2026-12-01T00:00:00Z (inclusive).")
@click.option("--created-before", default=None, help="RFC 3339 (exclusive).")
@LIMIT
@CURSOR
def list_command(status, file_name, created_after, created_before, limit, cursor):
    """Activities newest first (GET /api/v1/wallet/bulk-credit): one JSON object per line."""
    from web.bulk_credit import render_activity
    from web.inputs import rfc3339_field

    try:
        filters = reads.ActivityFilters.parse(status, file_name, rfc3339_field(created_after, "created_after"),
                                              rfc3339_field(created_before, "created_before"))
        found, next_cursor = reads.activities_page(services().uow(), filters, parse_limit(limit), cursor)
    except Rejected as refusal:
        refused(refusal)
    print_page([render_activity(activity) for activity in found], next_cursor)
