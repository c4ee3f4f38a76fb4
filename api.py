"""The Flask app: `flask --app api ...` for the CLI, `gunicorn 'api:create_app()'` to serve."""
from __future__ import annotations

from flask import Flask

import bootstrap
import cli
from pipeline.config import Settings
from web import bulk_credit, operations, problems, reconciliation, wallets
from web import dashboard

#: The largest request body the app reads, in bytes; bulk-credit uploads have their own limit.
REQUEST_BYTES_MAX = 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    app = Flask(__name__)
    services = bootstrap.services(settings)
    app.extensions["wallet"] = services
    app.config["MAX_CONTENT_LENGTH"] = max(REQUEST_BYTES_MAX, services.settings.bulk_credit_max_bytes)
    app.json.sort_keys = False
    problems.register(app)
    for blueprint in (operations.blueprint, wallets.blueprint, reconciliation.blueprint, bulk_credit.blueprint,
                      dashboard.blueprint):
        app.register_blueprint(blueprint)
    cli.register(app)
    return app
