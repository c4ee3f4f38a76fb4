"""Settings: every one is documented in .env.example, and the documented values are valid."""
from dataclasses import fields
from pathlib import Path

import pytest

from pipeline.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def documented() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#") and "=" in line)


def test_every_setting_is_documented_in_env_example():
    assert {spec.name.upper() for spec in fields(Settings)} - documented().keys() == set()


def test_the_documented_values_make_valid_settings():
    settings = Settings.from_environ({name: value for name, value in documented().items() if value})
    assert settings.transfer_fee_bps == 0 and settings.retry_max_attempts == 5


def test_a_limit_that_breaks_its_relations_is_refused_at_start():
    with pytest.raises(AssertionError, match="BULK_CREDIT_CHUNK_ROWS"):
        Settings.from_environ({"BULK_CREDIT_CHUNK_ROWS": "0"})
