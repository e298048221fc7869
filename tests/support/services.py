"""The test PostgreSQL and Redis servers: where they are, and the database backends a test
runs on (their fixtures are in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

DatabaseFactory = Callable[[], str]


def postgres_url() -> str:
    return os.environ.get("PROTOEVENTS_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
