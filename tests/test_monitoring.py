"""The monitoring that ships in monitoring/: the Prometheus rules pass promtool (syntax and
unit tests), and every metric the rules and the Grafana dashboard name is exported by the
processes as they run in containers: the web's /metrics, and a real worker and a real
scheduler each serving their own /metrics on METRICS_PORT from a multiprocess folder of
their own (docker-compose.yml)."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline import reconciliation
from tests.conftest import test_environ
from tests.test_bulk_pipeline import fund
from tests.processes import Process

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "monitoring" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "wallet-pipeline.json"
#: Names Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = {"up"}
#: How long a process gets to serve its /metrics, in seconds.
ENDPOINT_START_S = 30
#: A metric name in PromQL: ours start with `wallet_`; recording rules' names have colons.
METRIC_NAME = re.compile(r"(?<![\w:])(wallet_[a-z0-9_]+|up)(?![\w:])")


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/promtool.sh installs it (make test runs it)"
    return found


def run_promtool(*arguments: str) -> str:
    result = subprocess.run([promtool(), *arguments], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rules_and_the_scrape_configuration_pass_promtool_check():
    assert "SUCCESS" in run_promtool("check", "rules", "rules.yml")
    assert "SUCCESS" in run_promtool("check", "config", "prometheus.yml")


def test_the_main_alerts_fire_as_their_unit_tests_expect():
    assert "SUCCESS" in run_promtool("test", "rules", "rules.test.yml")


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook():
    found = alerts()
    assert len(found) >= 10
    for alert in found:
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        assert {"summary", "description", "runbook"} <= alert["annotations"].keys(), alert["alert"]


def test_the_readme_explains_every_alert():
    readme = (ROOT / "README.md").read_text()
    assert [alert["alert"] for alert in alerts() if alert["alert"] not in readme] == []


def named_metrics() -> set[str]:
    """Every metric name in the rules' and the dashboard's expressions (recording rules' own
    names, which have colons, are not metrics the app exports)."""
    expressions = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    recorded = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    used_records = {name for expression in expressions for name in re.findall(r"wallet:[a-z0-9_:]+", expression)}
    assert used_records <= recorded, f"the dashboard uses recording rules that do not exist: {used_records - recorded}"
    return {name for expression in expressions for name in METRIC_NAME.findall(expression)}


def sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape_endpoint(port: int, process: Process) -> str:
    deadline = time.monotonic() + ENDPOINT_START_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.read().decode()
        except OSError:
            assert process.process.poll() is None, f"the process exited: {process.tail()}"
            assert time.monotonic() < deadline, f"no /metrics on port {port}: {process.tail()}"
            time.sleep(0.2)


def web_samples(client) -> dict[tuple, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.timeout(180)
def test_the_web_worker_and_scheduler_export_every_metric_the_rules_and_the_dashboard_name(
        services, clean_database, client, workers, tmp_path):
    # Given a funded account and a clean reconciliation (gauges with a series per account, or
    # none before the first clean run)
    fund(services, "SGD", 10_000)
    reconciliation.run(services.uow(), reconciliation.start(services.uow(), full=True))
    # And a worker and a scheduler as in their containers: a multiprocess folder each, and a
    # METRICS_PORT of their own
    worker_port, scheduler_port = free_port(), free_port()
    for name in ("worker", "scheduler"):
        (tmp_path / name).mkdir()
    [worker] = workers(1, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker"), METRICS_PORT=str(worker_port))
    scheduler = Process(tmp_path / "scheduler.log", [sys.executable, "-m", "jobs"], test_environ(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "scheduler"), METRICS_PORT=str(scheduler_port)))
    try:
        # When each is scraped, and the web too once the scheduler leads
        worker_text = scrape_endpoint(worker_port, worker)
        scheduler_text = scrape_endpoint(scheduler_port, scheduler)
        deadline = time.monotonic() + ENDPOINT_START_S
        while web_samples(client).get(("wallet_scheduler_leader_present", ())) != 1:
            assert time.monotonic() < deadline, f"the scheduler did not lead: {scheduler.tail()}"
            time.sleep(0.3)
        web_text = client.get("/metrics").get_data(as_text=True)
    finally:
        scheduler.stop()

    # Then each answer passes promtool's lint of names, units and help texts
    for text in (web_text, worker_text, scheduler_text):
        linted = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=60)
        assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")
    # And every metric named in the rules and the dashboard is exported by one of them
    exported = sample_names(web_text) | sample_names(worker_text) | sample_names(scheduler_text)
    assert named_metrics() - PROMETHEUS_OWN - exported == set()
    # And the worker's counters that may stay at zero are there from the start
    worker_samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                      for family in text_string_to_metric_families(worker_text) for sample in family.samples}
    assert worker_samples[("wallet_bulk_chunks_failed_total", ())] == 0
    for kind in every_mismatch_kind():  # a kind first seen at 1 is no increase(): the alert would miss it
        assert worker_samples[("wallet_reconciliation_mismatches_total", (("kind", kind),))] == 0, kind
    assert worker_samples[("wallet_bulk_credited_minor_units_total", (("currency", "SGD"),))] == 0
    assert worker_samples[("wallet_process_starts_total", (("kind", "worker"),))] >= 1
    assert ("wallet_process_starts_total", (("kind", "scheduler"),)) in {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(scheduler_text) for sample in family.samples}
    # And the scheduler gave its lease back when it stopped
    assert web_samples(client)[("wallet_scheduler_leader_present", ())] == 0


def every_mismatch_kind() -> set[str]:
    """The kinds `mismatches_in` reports, from evidence that has one of each, not from its list."""
    from pipeline.reconciliation import ACTIVITY_COUNTERS, ROW_POSTING_STATUSES, Evidence, mismatches_in
    evidence = Evidence(
        horizon=0, wallets_checked=1, wallets=[(1, "SGD", 5, 4, 3)], unbalanced_entries=[("e", "SGD", 1)],
        currency_totals=[("SGD", 1)], activity_counters=[("a", counter, 1, 2) for counter in ACTIVITY_COUNTERS],
        row_postings=[(1, status, 1) for status in ROW_POSTING_STATUSES], reservations=[("a", "SGD", 1, 2)],
        reversal_rows=[1])
    kinds = {mismatch.kind for mismatch in mismatches_in(evidence)}
    assert len(kinds) == 17, kinds
    return kinds
