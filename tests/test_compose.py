"""docker-compose.yml, read as YAML (there is no Docker engine here, so nothing is started):
every setting reaches every app container, passwords come from .env only, every container
has a metrics folder of its own and is scraped, and the monitoring files it mounts exist."""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from pipeline.config import Settings
from tests.test_config import documented

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
#: The services that run the app's code, and the ones of them with processes to scrape.
APP_SERVICES = ("migrate", "web", "worker", "scheduler")
SCRAPED = ("web", "worker", "scheduler")
#: Variables read outside pipeline/config.py by every app process.
PROCESS_VARIABLES = ("LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR")
#: `${NAME}`, `${NAME:-default}`, `${NAME:?error}`: what compose takes from the shell or .env.
INTERPOLATED = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)")


def environment(service: str) -> dict:
    return SERVICES[service]["environment"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_setting_of_the_config_and_every_process_variable_reaches_each_app_container(service):
    settings = {spec.name.upper() for spec in fields(Settings)}
    assert (settings | set(PROCESS_VARIABLES)) - environment(service).keys() == set()


def test_a_setting_that_env_leaves_empty_is_passed_on_empty_and_means_its_default():
    # `NAME=` in .env reaches the container as an empty string (docker compose passes it on).
    settings = Settings.from_environ({"TRANSFER_FEE_BPS": "", "RETRY_BASE_DELAY_S": "", "DEFAULT_CURRENCY": "",
                                      "BULK_CREDIT_FAIL_USER_IDS": "", "SECRET_KEY": ""})
    assert settings == Settings()


def test_the_size_variables_of_each_command_are_passed_to_it():
    assert {"WEB_WORKERS", "WEB_THREADS"} <= environment("web").keys()
    assert {"WORKER_PROCESSES", "WORKER_THREADS"} <= environment("worker").keys()


def test_no_password_is_written_in_the_file_and_each_comes_from_env_with_an_example():
    text = (ROOT / "docker-compose.yml").read_text()
    postgres_password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert postgres_password.startswith("${POSTGRES_PASSWORD:?"), postgres_password
    assert "${POSTGRES_PASSWORD:?" in environment("web")["DATABASE_URL"]
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert not re.search(r"postgresql\+psycopg://\w+:[^$@]+@", text), "a literal password in a database URL"
    # Every variable the file takes from .env is documented in .env.example.
    assert set(INTERPOLATED.findall(text)) - documented().keys() == set()


def test_each_app_container_writes_its_metrics_to_a_tmpfs_of_its_own():
    for service in APP_SERVICES:
        folder = environment(service)["PROMETHEUS_MULTIPROC_DIR"]
        mounts = [entry.split(":", 1)[0] for entry in SERVICES[service]["tmpfs"]]
        assert folder in mounts, service
        assert "uid=10001" in SERVICES[service]["tmpfs"][0], "the image's user must own it"
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()


def test_prometheus_scrapes_every_container_of_web_worker_and_scheduler_and_loads_the_rules():
    prometheus = SERVICES["prometheus"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in prometheus["volumes"] if volume.startswith("./"))
    for source in mounts:
        assert (ROOT / source).is_file(), source
    assert mounts["./monitoring/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./monitoring/prometheus/rules.yml"] == "/etc/prometheus/rules.yml"
    config = yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]  # beside prometheus.yml in the container
    scraped = {(sd["names"][0], sd["port"]) for job in config["scrape_configs"] for sd in job["dns_sd_configs"]}
    expected = {("web", 8088)} | {(service, int(environment(service)["METRICS_PORT"])) for service in ("worker", "scheduler")}
    assert scraped == expected
    assert set(SCRAPED) == {name for name, _ in scraped}


def test_grafana_loads_the_dashboard_and_the_prometheus_data_source():
    grafana = SERVICES["grafana"]
    for volume in grafana["volumes"]:
        if volume.startswith("./"):
            assert (ROOT / volume.split(":", 1)[0]).exists(), volume
    provisioning = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert provisioning["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_readme_tells_how_to_get_the_first_admin_key_in_compose():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose exec web flask --app api keys create --scope admin" in readme
