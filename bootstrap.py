"""Wiring: settings, the database engine and Redis, made once per process on demand."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine

from pipeline.config import Settings
from storage.engine import make_engine
from storage.unit_of_work import SqlUnitOfWork


@dataclass
class Services:
    settings: Settings
    engine: Engine = field(init=False)

    def __post_init__(self):
        self.engine = make_engine(self.settings)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.settings.lock_timeout_ms)

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


def services(settings: Settings | None = None) -> Services:
    return Services(settings or Settings.from_environ())


@functools.cache
def process_services() -> Services:
    """One set per worker or scheduler process, made on first use."""
    return services()


def app_services() -> Services:
    """The Services of the running Flask app, for its views and CLI commands."""
    from flask import current_app  # only the web and the CLI come here

    return current_app.extensions["wallet"]
