"""The OpenAPI 3.1 document (GET /openapi.json) and Swagger UI (GET /docs), which works offline.

APIFlask builds the document from the code: every URL rule, method, path parameter and
blueprint tag. The views parse their own input (so that validation errors stay the
problem+json of web/problems.py), which leaves APIFlask nothing to learn request bodies
and answers from; `web.contract` describes those per operation, and `complete_spec` merges
them in. An operation the contract does not describe keeps what APIFlask generated.

The /docs page is ours rather than APIFlask's (whose template names a font host and the
Swagger UI documentation's address): Swagger UI's files come from the pinned
`flask-swagger-ui` package (its static files only, not its blueprint) and are served by
this app under /docs/assets/, so the page loads nothing from the internet.
"""
from __future__ import annotations

import re
from pathlib import Path

import flask_swagger_ui
from apiflask import APIBlueprint, APIFlask
from flask import abort, current_app, render_template_string, send_from_directory

from web import contract, schemas, wallet_schemas, webhook_schemas

TITLE = "Wallet Pipeline"
VERSION = "1"
#: Swagger UI's files, as shipped by flask-swagger-ui.
ASSETS_DIR = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
ASSETS_PATH = "/docs/assets"
#: The only files the assets route serves.
ASSET_NAMES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                         "favicon-32x32.png", "favicon-16x16.png"})
#: How long browsers may cache the assets, in seconds; they change only with the package's version.
ASSETS_MAX_AGE_S = 24 * 3600

#: Swagger UI's page: every file it loads is served by this app, and it names no other host.
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ title }} API</title>
  <link rel="icon" type="image/png" href="{{ url_for('docs.asset', name='favicon-32x32.png') }}">
  <link rel="stylesheet" href="{{ url_for('docs.asset', name='swagger-ui.css') }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('docs.asset', name='swagger-ui-bundle.js') }}"></script>
  <script src="{{ url_for('docs.asset', name='swagger-ui-standalone-preset.js') }}"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: {{ url_for('openapi.spec') | tojson }},
        dom_id: "#swagger-ui",
        deepLinking: true,
        persistAuthorization: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "BaseLayout"
      });
    };
  </script>
</body>
</html>
"""

blueprint = APIBlueprint("docs", __name__, tag="Operations")


@blueprint.get("/docs")
def page():
    return render_template_string(PAGE, title=TITLE)


@blueprint.get(f"{ASSETS_PATH}/<name>")
@blueprint.doc(hide=True)
def asset(name: str):
    if name not in ASSET_NAMES:
        abort(404)
    return send_from_directory(ASSETS_DIR, name, max_age=ASSETS_MAX_AGE_S)


def configure(app: APIFlask) -> None:
    """Describes the document, serves the page and its assets, and registers the spec processor."""
    app.config.update(
        # Our errors are problem+json, described by `contract`, not APIFlask's HTTPError.
        AUTO_404_RESPONSE=False,
        AUTO_VALIDATION_ERROR_RESPONSE=False,
        AUTO_AUTH_ERROR_RESPONSE=False,
        # The document describes the API, not the host that served it.
        AUTO_SERVERS=False,
        INFO={"description": "The public contract of the Wallet Pipeline: users and wallets, money movements,"
                             " bulk credits, reconciliation and operations. Send `Authorization: Bearer <token>`"
                             " (an API key made with `flask --app api keys create`)."},
    )
    app.register_blueprint(blueprint)
    app.spec_processor(complete_spec)


#: Views whose own names would say little to a client's user.
OPERATION_IDS = {"docs.page": "docs", "openapi.spec": "openapi_document"}
#: Operations whose view's name alone says too little in a generated client (`place`, `void`,
#: `list_all`): named with their object.
NAMED = {
    ("POST", "/api/v1/wallet/holds"): "place_hold", ("POST", "/api/v1/wallet/holds/{hold_id}/capture"): "capture_hold",
    ("POST", "/api/v1/wallet/holds/{hold_id}/void"): "void_hold", ("DELETE", "/api/v1/users/{user_id}"): "close_user",
    ("POST", "/api/v1/webhooks"): "create_webhook", ("GET", "/api/v1/webhooks"): "list_webhooks",
    ("DELETE", "/api/v1/webhooks/{subscription_id}"): "delete_webhook",
    ("GET", "/api/v1/webhooks/{subscription_id}/deliveries"): "list_deliveries",
    ("POST", "/api/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/replay"): "replay_delivery",
    ("GET", "/api/v1/audit-events"): "list_audit_events",
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/approve"): "approve_activity",
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/reject"): "reject_activity",
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/cancel"): "cancel_activity",
    ("POST", "/api/v1/wallet/bulk-credit/retry"): "retry_activity",
    ("POST", "/api/v1/wallet/bulk-credit/{activity_id}/reverse"): "reverse_activity",
    ("POST", "/api/v1/users/{user_id}/wallets/{code}/freeze"): "freeze_wallet",
    ("POST", "/api/v1/users/{user_id}/wallets/{code}/unfreeze"): "unfreeze_wallet",
    ("GET", "/api/v1/funding-accounts"): "list_funding_accounts",
    ("GET", "/api/v1/funding-accounts/{name}"): "get_funding_account",
    ("POST", "/api/v1/funding-accounts/{name}/top-up"): "top_up_funding_account",
}
#: Blueprints that serve pages, not the API.
UNDOCUMENTED = ("dashboard", "docs.asset", "static")


def _operation_ids() -> dict[tuple[str, str], str]:
    """(method, OpenAPI path) -> the view function's name, such as `list_activities`: what a
    generated client calls the operation. A name two documented operations share gets its
    blueprint's name in front."""
    views = {}
    for rule in current_app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            views[(method, path)] = OPERATION_IDS.get(rule.endpoint, rule.endpoint)
            if (method, path) in NAMED:
                views[(method, path)] = "named." + NAMED[(method, path)]
    views = {key: endpoint for key, endpoint in views.items() if not endpoint.startswith(UNDOCUMENTED)}
    names = [endpoint.rpartition(".")[2] for endpoint in views.values()]
    return {key: (name if names.count(name) == 1 else endpoint.replace(".", "_"))
            for key, endpoint in views.items() for name in [endpoint.rpartition(".")[2]]}


def complete_spec(spec: dict) -> dict:
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "An API key of scope admin, operator, approver or user:<id>."}
    components.setdefault("schemas", {}).update(contract.SCHEMAS)
    components["schemas"].update(schemas.SCHEMAS)
    components["schemas"].update(wallet_schemas.SCHEMAS)
    components["schemas"].update(webhook_schemas.SCHEMAS)
    spec["security"] = [{"bearer": []}]
    # Several blueprints share the tag "Operations"; the document lists each tag once.
    spec["tags"] = list({tag["name"]: tag for tag in spec.get("tags", [])}.values())
    # APIFlask leaves its own spec route out of the document; the contract describes it.
    spec.setdefault("paths", {}).setdefault("/openapi.json", {"get": {"tags": ["Operations"]}})
    operation_ids = _operation_ids()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            operation["operationId"] = operation_ids.get((method.upper(), path), f"{method}_{path}")
            contract.state_path_parameters(operation)
            described = contract.OPERATIONS.get((method.upper(), path))
            if described is not None:
                contract.apply(operation, described)
    # Paths in the contract's order (API.md's), then any others as APIFlask found them.
    order = list(dict.fromkeys(path for _, path in contract.OPERATIONS))
    spec["paths"] = dict(sorted(spec["paths"].items(),
                                key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    return spec
