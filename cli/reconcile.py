"""`reconcile [--full] [--csv FILE]`: a reconciliation run here and now."""
from __future__ import annotations


import click

from bootstrap import app_services as services
from cli.common import plainly


@click.command("reconcile")
@click.option("--full", is_flag=True, help="Check everything, not only what changed since the last clean run.")
# Opened before the run (lazy=False): a path that cannot be written (no such folder, a name too
# long, no permission) is a usage error, exit 2, never a 1 that says "mismatch" to a script.
@click.option("--csv", "csv_file", type=click.File("w", encoding="utf-8", lazy=False),
              help="Also write the mismatches to this CSV file.")
@plainly
def reconcile(full, csv_file):
    """Runs a reconciliation here and now; exits with status 1 when anything mismatches."""
    # Imported here: pandas takes a second to load, which every other command would pay.
    from pipeline import reconciliation
    from telemetry.alerting import reconciliation_alert

    alert = reconciliation_alert(services().settings.alert_webhook_url)
    run = reconciliation.run(services().uow(), reconciliation.start(services().uow(), full), alert)
    click.echo(f"reconciliation {run['id']}: {run['status']}, {run['wallets_checked']} wallets checked,"
               f" {run['mismatch_count']} mismatches")
    table = reconciliation.mismatch_table(run["mismatches"])
    if not table.empty:
        click.echo(table.to_string(index=False))
    if csv_file:
        table.to_csv(csv_file, index=False)
    raise SystemExit(1 if run["mismatch_count"] else 0)
