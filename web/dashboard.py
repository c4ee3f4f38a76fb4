"""The operator's dashboard: server-rendered pages over the same use cases as the JSON API.

Sign in with an operator, approver or admin API key (web/dashboard_session.py); check a
CSV, upload it, approve or reject it (web/dashboard_payouts.py); watch an activity settle,
live, by Server-Sent Events (web/dashboard_events.py); list its FAILED or INVALID rows,
retry them, download them as CSV; reverse a credit (web/dashboard_actions.py); find a user
by id, email or external id and read their wallets and history (web/dashboard_users.py); find
transactions by reference (web/dashboard_transactions.py); list
and start reconciliation runs. A `user:<id>` key signs in to its own page only: balances,
history and a transfer (web/dashboard_self.py). Running activities show their rows per second and
time left (web/display.py). Counts and amounts show thousands separators. Templates are in web/templates/dashboard/,
the one script and style sheet in web/static/dashboard/: no build step, no CDN.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import (Blueprint, Response, flash, g, redirect, render_template, request,
                   url_for)
from werkzeug.exceptions import HTTPException

from bootstrap import app_services as services
from pipeline import reconciliation
from pipeline.bulk import chunks, reads, release
from pipeline.bulk.ports import Actor
from pipeline.bulk.status import ROW_FAILED, ROW_INVALID, ROW_STATUSES
from pipeline.errors import Rejected
from telemetry.metrics import BULK_ROW_RETRIES
from web import (bulk_credit, dashboard_actions, dashboard_payouts, dashboard_self, dashboard_session,
                 dashboard_transactions, dashboard_users, stream_slots)
from web.dashboard_payouts import described
from web.display import amount, count, grouped, pace_shown, when
from web.dashboard_events import busy_events, progress_events
from web.problems import HttpProblem
from web.wallets import money

blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                      static_folder="static/dashboard", static_url_path="/static")
blueprint.record_once(lambda state: dashboard_session.configure(state.app))
dashboard_payouts.register(blueprint)
dashboard_actions.register(blueprint)
dashboard_users.register(blueprint)
dashboard_self.register(blueprint)
dashboard_transactions.register(blueprint)
#: HTML pages, not API: APIFlask leaves a blueprint with this flag out of /openapi.json.
blueprint.enable_openapi = False

#: Rows shown per page of an activity.
ROWS_PER_PAGE = 50
RECONCILIATIONS_PER_PAGE = 20
#: The pages load only their own script and style sheet, and may be framed by no one.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PUBLIC_ENDPOINTS = ("dashboard.sign_in", "dashboard.static")
#: Event streams answer a signed-out browser 401, not a redirect to a page it cannot show.
STREAM_ENDPOINTS = ("dashboard.activity_events", "dashboard.own_events")


@blueprint.before_request
def require_session():
    if request.method == "POST" and not dashboard_session.csrf_ok():
        return render_template("dashboard/error.html", status=400,
                               detail="The form has expired or did not come from this dashboard; reload the page and try again."), 400
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    g.principal = dashboard_session.signed_in()
    if g.principal is None:
        if request.endpoint in STREAM_ENDPOINTS:
            return Response("sign in first\n", status=401, mimetype="text/plain")
        return redirect(url_for("dashboard.sign_in", next=request.full_path if request.method == "GET" else None))
    if g.principal.user_id is not None and request.endpoint not in dashboard_self.ENDPOINTS:
        return _user_key_elsewhere()
    return None


def _user_key_elsewhere():
    """A `user:` key outside its own page: the home page leads there, any other page is refused."""
    if request.endpoint == "dashboard.home":
        return redirect(url_for("dashboard.own_page", user_id=g.principal.user_id))
    detail = "A key of scope user:<id> opens its own page only: sign in with an operator, approver or admin key."
    return render_template("dashboard/error.html", status=403, detail=detail), 403


@blueprint.after_request
def secure_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "dashboard.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@blueprint.errorhandler(Rejected)
def on_refusal(refusal: Rejected):
    return render_template("dashboard/error.html", status=refusal.status, detail=refusal.detail), refusal.status


@blueprint.errorhandler(HttpProblem)
def on_http_problem(problem: HttpProblem):
    body = problem.body
    return render_template("dashboard/error.html", status=body["status"], detail=body["detail"]), body["status"]


@blueprint.errorhandler(HTTPException)
def on_http_exception(error: HTTPException):
    """A file above the size limit, say: a page, not the API's problem+json."""
    status = error.code or 500
    return render_template("dashboard/error.html", status=status, detail=error.description or error.name), status


@blueprint.context_processor
def dashboard_globals():
    return {"csrf_token": dashboard_session.csrf_token, "money": money, "when": when, "count": count,
            "amount": amount, "grouped": grouped, "pace_shown": pace_shown}


def _local_path(target: str | None) -> str:
    """Where to go after signing in: only a path of this dashboard, never another site."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith(blueprint.url_prefix + "/"):
        return url_for("dashboard.home")
    return parts.path + (f"?{parts.query}" if parts.query else "")


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return render_template("dashboard/sign_in.html", next=request.args.get("next"))
    try:
        dashboard_session.sign_in(request.form.get("api_key", ""))
    except dashboard_session.SignInRefused as refused:
        return render_template("dashboard/sign_in.html", error=refused.message,
                               next=request.form.get("next")), refused.status
    return redirect(_local_path(request.form.get("next")))


@blueprint.post("/sign-out")
def sign_out():
    dashboard_session.sign_out()
    return redirect(url_for("dashboard.sign_in"))


@blueprint.get("/")
def home():
    return dashboard_payouts.render_home()


@blueprint.get("/activities")
def open_activity():
    activity_id = chunks.parse_activity_id(request.args.get("activity_id", "").strip())
    return redirect(url_for("dashboard.activity", activity_id=activity_id))


@blueprint.get("/activities/<activity_id>")
def activity(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    status = reads.parse_row_status(request.args.get("status") or None)
    found = bulk_credit.render_activity(reads.activity(services().uow(), activity_id))
    page = reads.rows_page(services().uow(), activity_id, status, ROWS_PER_PAGE, request.args.get("cursor"))
    return render_template("dashboard/activity.html", activity=found, final=found["final"],
                           rows=[bulk_credit.render_row(row) for row in page.items], next_cursor=page.next_cursor,
                           status=status, statuses=ROW_STATUSES, exportable=(ROW_FAILED, ROW_INVALID),
                           reverse_key=dashboard_actions.new_reverse_key(), **dashboard_payouts.state_of(found))


@blueprint.get("/activities/<activity_id>/events")
def activity_events(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    uow_factory = services().uow
    reads.activity(uow_factory(), activity_id)  # an unknown activity is a 404 before the stream starts

    def read_activity() -> dict:
        return bulk_credit.render_activity(reads.activity(uow_factory(), activity_id))

    # No stream_with_context: the stream needs nothing of the request, and keeps nothing of it.
    budget = stream_slots.slots()
    release = budget.take()
    def with_pace(found: dict) -> dict:
        return {**found, **pace_shown(found)}

    body = (busy_events(budget.capacity) if release is None
            else stream_slots.SlotBody(progress_events(read_activity, annotate=with_pace), release))
    return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@blueprint.get("/activities/<activity_id>/rows.csv")
def activity_rows_csv(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    return bulk_credit.export_response(activity_id, reads.parse_row_status(request.args.get("status") or None))


@blueprint.post("/activities/<activity_id>/retry")
def retry(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    dashboard_payouts.require_operator()
    try:
        retried = chunks.retry_failed_rows(services().uow, bulk_credit.chunk_queue(), services().settings,
                                           activity_id, Actor("api_key", g.principal.api_key_id))
        BULK_ROW_RETRIES.labels("dashboard").inc(retried.retried_records)
        flash(f"{retried.retried_records:,} failed rows were sent again.", "info")
    except Rejected as refusal:
        if refusal.status == 404:
            raise
        flash(f"Nothing was retried: {described(refusal)}", "error")
    return redirect(url_for("dashboard.activity", activity_id=activity_id))


@blueprint.post("/activities/<activity_id>/cancel")
def cancel(activity_id):
    activity_id = chunks.parse_activity_id(activity_id)
    dashboard_payouts.require_operator()
    try:
        ended = release.cancel(services().uow, services().settings, activity_id,
                               Actor("api_key", g.principal.api_key_id), dashboard_payouts.reason_of(request.form))
        flash(f"Cancelled: {ended.counters.cancelled:,} rows will not be paid; their money is back in the funding"
              f" account.", "info")
    except Rejected as refusal:
        if refusal.status == 404:
            raise
        flash(f"Nothing was cancelled: {described(refusal)}", "error")
    return redirect(url_for("dashboard.activity", activity_id=activity_id))


@blueprint.get("/reconciliations")
def reconciliations():
    page = reconciliation.recent(services().uow(), RECONCILIATIONS_PER_PAGE, request.args.get("cursor"))
    return render_template("dashboard/reconciliations.html", runs=page.items, next_cursor=page.next_cursor)


@blueprint.post("/reconciliations")
def start_reconciliation():
    dashboard_payouts.require_operator()
    reconciliation_id = reconciliation.start(services().uow(), request.form.get("full") == "on",
                                             Actor("api_key", g.principal.api_key_id))
    from actors.reconciliation import reconcile  # the broker is only configured where messages are sent

    reconcile.send(reconciliation_id)
    flash(f"Reconciliation {reconciliation_id} was queued; a worker runs it.", "info")
    return redirect(url_for("dashboard.reconciliations"))
