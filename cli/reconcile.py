"""`reconcile [--full] [--csv FILE]`: a reconciliation run here and now."""
from __future__ import annotations

import os

import click

from bootstrap import app_services as services
from cli.common import plainly


@click.command("reconcile")
@click.option("--full", is_flag=True, help="Check everything, not only what changed since the last clean run.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the mismatches to this CSV file.")
@plainly
def reconcile(full, csv_path):
    """Runs a reconciliation here and now; exits with status 1 when anything mismatches."""
    if csv_path and not os.path.isdir(os.path.dirname(os.path.abspath(csv_path))):
        # Checked first: failing after the run would exit 1, which says "mismatch" to a script.
        raise click.BadParameter(f"the folder of {csv_path} does not exist", param_hint="--csv")
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
    if csv_path:
        table.to_csv(csv_path, index=False)
    raise SystemExit(1 if run["mismatch_count"] else 0)
