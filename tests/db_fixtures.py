"""Database fixtures: migrated SQLite files and fresh PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from tests.unavailable import unavailable

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

DatabaseFactory = Callable[[], str]


def postgres_url() -> str:
    return os.environ.get("PROTOEVENTS_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the test server's maintenance database; skips (fails in CI)
    when the server is not reachable."""
    url = postgres_url()
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = (
            f"PostgreSQL not reachable at {sa.make_url(url).render_as_string()}: "
            f"set PROTOEVENTS_TEST_POSTGRES_URL ({str(exc).splitlines()[0]})"
        )
        unavailable(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_database(postgres_admin: Engine) -> Iterator[DatabaseFactory]:
    """A factory of fresh, empty PostgreSQL databases (URLs), all dropped after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"protoevents_test_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return sa.make_url(postgres_url()).set(database=name).render_as_string(False)

    yield make
    with postgres_admin.connect() as connection:
        for name in created:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """`make(backend)`: the URL of a fresh empty database of that backend."""

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'events-{uuid.uuid4().hex[:8]}.db'}"
        factory: DatabaseFactory = request.getfixturevalue("postgres_database")
        return factory()

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each database backend in turn."""
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, empty_database_url: Callable[[str], str]) -> str:
    """A fresh empty database of `backend`."""
    return empty_database_url(backend)


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database of `backend`, migrated to the newest revision."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()
