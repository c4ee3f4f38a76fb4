"""The Flask app: `flask --app api ...` for the CLI, `gunicorn 'api:create_app()'` to serve."""
from __future__ import annotations

from apiflask import APIFlask

import bootstrap
import cli
from pipeline.config import Settings
from telemetry import logs, metrics
from web import events as event_feeds
from web import bulk_credit, docs, funding, inputs, observability, operations, problems, reconciliation, search, wallets
from web import dashboard


def create_app(settings: Settings | None = None) -> APIFlask:
    logs.configure(logs.level_from_environ())
    # json_errors=False: web/problems.py, not APIFlask, answers every error (problem+json).
    # docs_path=None: web/docs.py serves /docs itself, from local files only.
    app = APIFlask(__name__, title=docs.TITLE, version=docs.VERSION, json_errors=False, docs_path=None,
                   spec_path="/openapi.json")
    docs.configure(app)
    services = bootstrap.services(settings)
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
    cli.register(app)
    metrics.initialise(services.settings.supported_currencies)
    metrics.process_started("web")
    return app
