"""The layout: pipeline/ (domain and use cases) imports no framework, the top level holds only
the entry points, and the command line has one module per command group."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"
FRAMEWORKS = {"flask", "werkzeug", "dramatiq", "sqlalchemy", "psycopg", "apscheduler", "redis", "alembic",
              "gunicorn", "storage", "web", "actors", "jobs", "api", "bootstrap", "cli"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


MODULES = sorted(PIPELINE.rglob("*.py"))


def test_the_pipeline_package_has_modules_to_check():
    assert len(MODULES) >= 10


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(PIPELINE)))
def test_pipeline_modules_import_no_web_queue_or_database_framework(module):
    assert imported_roots(module) & FRAMEWORKS == set()


#: The only modules at the top level: the Flask app for the web and the command line
#: (`api.py`), the wiring every entry point shares (`bootstrap.py`: settings, engine, Redis),
#: and the settings gunicorn reads from the working directory (`gunicorn.conf.py`).
TOP_LEVEL_MODULES = {"api.py", "bootstrap.py", "gunicorn.conf.py"}
#: The top level's packages.
PACKAGES = {"actors", "bench", "cli", "jobs", "pipeline", "storage", "telemetry", "tests", "web"}


def test_the_top_level_holds_only_the_entry_points_the_layout_names():
    assert {path.name for path in ROOT.glob("*.py")} == TOP_LEVEL_MODULES
    assert {path.parent.name for path in ROOT.glob("*/__init__.py")} == PACKAGES


def test_the_command_line_has_one_module_per_command_group():
    import cli

    groups = {command.name.replace("-", "_"): command for command in cli.COMMANDS}
    modules = {path.stem for path in (ROOT / "cli").glob("*.py")} - {"__init__", "common"}
    assert set(groups) == modules == {"db", "keys", "users", "bulk_credit", "funding", "transactions", "reconcile"}
    for name, command in groups.items():
        assert command is getattr(getattr(cli, name), name)  # cli/users.py defines `users`, and so on
