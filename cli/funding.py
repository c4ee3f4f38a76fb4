"""`funding list|show|top-up`: the funding accounts bulk credits draw from (API.md, "Funding").

A top-up moves money, so it is an admin key's act, as over HTTP: `--token` names the key and
`--idempotency-key` is required. Both share the API's idempotency records: the same key with
the same amount, currency and reference replays the first answer (over HTTP or here), and
moves nothing a second time; with anything else it is refused (`idempotency_key_reused`).
"""
from __future__ import annotations

import json

import click

from bootstrap import app_services as services
from cli.common import TOKEN, Group, actor_of, refused
from pipeline import funding as accounts
from pipeline import wallets
from pipeline.errors import Rejected
from pipeline.idempotency import IdempotentRequest, answer_once, request_sha256
from pipeline.text import parse_idempotency_key
from web.problems import refusal_body

funding = Group("funding", help="Funding accounts: balances, top-ups.")
#: Accounts read per page by `funding list`.
LIST_PAGE = 100


def _balances(name: str) -> dict:
    return accounts.describe(name, accounts.account(services().uow(), name))


@funding.command("list")
def funding_list():
    """Every funding account with its balances, one JSON object per line."""
    cursor = None
    while True:
        page = accounts.accounts_page(services().uow(), LIST_PAGE, cursor)
        for item in page.items:
            click.echo(json.dumps(_balances(item["name"])))
        cursor = page.next_cursor
        if cursor is None:
            return


@funding.command("show")
@click.argument("name")
def funding_show(name):
    """One account's balances per currency (free to reserve, and reserved for rows not yet paid)."""
    try:
        click.echo(json.dumps(_balances(accounts.parse_account_name(name, "name")), indent=2))
    except Rejected as refusal:
        refused(refusal)


@funding.command("top-up")
@click.argument("name")
@click.option("--amount", required=True, help="Decimal text in the currency's units, e.g. 2500.00.")
@click.option("--currency", default=None, help="Default: DEFAULT_CURRENCY.")
@click.option("--reference", default=None, help="Your own reference, kept on the journal entry.")
@click.option("--idempotency-key", "key", required=True, help="The same key never moves money twice.")
@TOKEN
def funding_top_up(name, amount, currency, reference, key, token):
    """Moves money from `bank` into the account (created on its first top-up); an admin key's act."""
    if token is None:
        raise click.UsageError("a top-up needs an admin API key: --token or $WALLET_TOKEN")
    actor = actor_of(token, "may_move_money")
    settings = services().settings
    body = {"amount": amount, "currency": currency or settings.default_currency,
            **({"reference": reference} if reference is not None else {})}
    try:
        name = accounts.parse_account_name(name, "name")
        key = parse_idempotency_key(key, field="--idempotency-key")
        request = wallets.parse_money_request(body, settings, f"api:{actor.api_key_id}:{key}")
        once = IdempotentRequest(actor.api_key_id, key,
                                 request_sha256("POST", f"/api/v1/funding-accounts/{name}/top-up", body))
        committed = []  # rendered in the transaction; logged once it has committed
        (status, answer), replayed = answer_once(
            services().uow, settings.transaction_attempts_max, once,
            lambda uow: accounts.top_up(uow, settings, name, request),
            lambda moved: (committed.append(moved), (201, accounts.receipt(moved)))[1],
            lambda refusal: (refusal.status, refusal_body(refusal)))
    except Rejected as refusal:
        refused(refusal)
    if committed and status == 201 and not replayed:
        accounts.log_top_up(actor, committed[-1])
    if status >= 400:
        raise click.ClickException(f"{answer['code']}: {answer['detail']}" + (" (replayed)" if replayed else ""))
    if replayed:
        click.echo(f"replayed: idempotency key {key} was used already; nothing moved this time", err=True)
    click.echo(json.dumps(answer, indent=2))
