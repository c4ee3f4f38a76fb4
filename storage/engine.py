"""Engines are made on demand from settings; nothing connects at import time."""
from __future__ import annotations

from sqlalchemy import Engine, create_engine

from pipeline.config import Settings


def make_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_timeout=10,
        pool_pre_ping=True,
        pool_recycle=1800,
    )
