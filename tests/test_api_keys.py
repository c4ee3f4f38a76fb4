"""API keys have labels, an expiry and a last-used time; `keys list` shows them and `keys
revoke` stops a key in every process within the token cache's minute (issue 11, item 4)."""
from __future__ import annotations

import json

from sqlalchemy import text

from web import auth


def cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def listed(app) -> list[dict]:
    result = cli(app, "keys", "list", "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_keys_are_created_with_a_label_and_an_expiry_and_listed_without_their_tokens(app, client, clean_database):
    made = cli(app, "keys", "create", "--scope", "operator", "--label", "payroll robot", "--expires-in", "30")
    token = made.stdout.strip()
    assert made.exit_code == 0 and token.startswith("wp_")

    (key,) = listed(app)
    assert (key["scope"], key["label"], key["last_used_at"], key["revoked_at"]) == (
        "operator", "payroll robot", None, None)
    assert key["expires_at"] > key["created_at"] and token not in json.dumps(key)
    auth._cache.clear()
    assert client.get("/api/v1/reconciliations", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert listed(app)[0]["last_used_at"] is not None
    table = cli(app, "keys", "list").stdout.splitlines()
    assert table[0].split("\t") == ["id", "scope", "label", "created_at", "expires_at", "last_used_at", "revoked_at"]
    with clean_database.connect() as connection:
        audited = connection.execute(text("SELECT action, actor_type FROM audit_events")).all()
    assert audited == [("api_key.create", "command_line")]


def test_a_revoked_key_is_refused_and_stays_listed(app, client, clean_database):
    token = cli(app, "keys", "create", "--scope", "admin").stdout.strip()
    key_id = listed(app)[0]["id"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/reconciliations", headers=headers).status_code == 200

    revoked = cli(app, "keys", "revoke", str(key_id))
    again = cli(app, "keys", "revoke", str(key_id))
    unknown = cli(app, "keys", "revoke", "999999")

    assert revoked.exit_code == 0 and again.exit_code == 0
    assert unknown.exit_code == 1 and "not_found" in unknown.output
    auth._cache.clear()  # what every process does within TOKEN_CACHE_S
    assert client.get("/api/v1/reconciliations", headers=headers).status_code == 401
    assert listed(app)[0]["revoked_at"] is not None


def test_an_expired_key_is_refused(app, client, clean_database):
    token = cli(app, "keys", "create", "--scope", "admin", "--expires-in", "1").stdout.strip()
    with clean_database.begin() as connection:  # a day later
        connection.execute(text("UPDATE api_keys SET created_at = created_at - interval '2 days',"
                                " expires_at = now() - interval '1 second'"))
    auth._cache.clear()
    assert client.get("/api/v1/reconciliations", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_bad_labels_and_expiries_are_refused_naming_the_option(app, clean_database):
    for args, option in ((("--expires-in", "0"), "--expires-in"), (("--expires-in", "99999"), "--expires-in"),
                         (("--label", " "), "--label"), (("--scope", "root"), "--scope"),
                         # a key for a user that does not exist signs in as nobody (break-it pass)
                         (("--scope", "user:9abf8d29-6a5a-404b-b87e-3479297efc7c"), "--scope")):
        result = cli(app, "keys", "create", *(("--scope", "admin") if option != "--scope" else ()), *args)
        assert result.exit_code == 2 and option in result.output, (args, result.output)
    assert listed(app) == []
