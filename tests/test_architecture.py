"""The dependency rule: pipeline/ (domain and use cases) imports no framework."""
import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline"
FRAMEWORKS = {"flask", "werkzeug", "dramatiq", "sqlalchemy", "psycopg", "apscheduler", "redis", "alembic",
              "gunicorn", "storage", "web", "actors", "jobs", "api", "bootstrap"}


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
