"""The Flask app: `flask --app api ...` for the CLI, `gunicorn 'api:create_app()'` to serve."""
from __future__ import annotations

from apiflask import APIFlask
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

import bootstrap
import cli
from pipeline.config import Settings
from telemetry import logs, metrics
from web import events as event_feeds
from web import bulk_credit, docs, funding, inputs, observability, operations, problems, reconciliation, search, wallets
from web import dashboard, holds, lifecycle
from web import audit as audit_web, webhooks as webhooks_web


def create_app(settings: Settings | None = None) -> APIFlask:
    logs.configure(logs.level_from_environ())
    # json_errors=False: web/problems.py, not APIFlask, answers every error (problem+json).
    # docs_path=None: web/docs.py serves /docs itself, from local files only.
    app = APIFlask(__name__, title=docs.TITLE, version=docs.VERSION, json_errors=False, docs_path=None,
                   spec_path="/openapi.json")
    docs.configure(app)
    try:
        services = bootstrap.services(settings)
    except (AssertionError, ValueError, ArgumentError, NoSuchModuleError, ImportError) as error:
        # One line, for the command line and gunicorn alike: the setting and what is wrong.
        raise SystemExit(f"wallet-pipeline: a setting is wrong: {str(error).splitlines()[0] or type(error).__name__}"
                         " (see .env.example; DATABASE_URL looks like"
                         " postgresql+psycopg://wallet@127.0.0.1:54329/wallet)")
    app.extensions["wallet"] = services
    # The CSV uploads' limit; web/inputs.py holds every other route to REQUEST_BODY_MAX_BYTES.
    app.config["MAX_CONTENT_LENGTH"] = services.settings.bulk_credit_max_bytes
    app.json.sort_keys = False
    problems.register(app)
    observability.register(app)
    inputs.register(app)
    for blueprint in (operations.blueprint, wallets.blueprint, reconciliation.blueprint, bulk_credit.blueprint,
                      funding.blueprint, search.blueprint, dashboard.blueprint):
        app.register_blueprint(blueprint)
    app.register_blueprint(event_feeds.blueprint)
    app.register_blueprint(webhooks_web.blueprint)
    app.register_blueprint(audit_web.blueprint)
    app.register_blueprint(holds.blueprint)
    app.register_blueprint(lifecycle.blueprint)
    cli.register(app)
    metrics.initialise(services.settings.supported_currencies)
    metrics.process_started("web")
    return app
