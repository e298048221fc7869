"""Shared fixtures: a runner for the `protoevents` command, proxies, recorders, a small disk,
migrated SQLite files and fresh PostgreSQL databases, and Redis key prefixes and channels."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder import Recorder
from tests.support.commands import CliRunner
from tests.support.fake_proxy import FakeProxy
from tests.support.paths import ROOT
from tests.support.services import BACKENDS, DEFAULT_REDIS_URL, DatabaseFactory, postgres_url
from tests.support.unavailable import unavailable

if TYPE_CHECKING:
    from tests.support.serve_process import ServeProcess


@pytest.fixture
def run_cli() -> CliRunner:
    """Run `protoevents ARGS` in a subprocess; `pythonpath` folders go first on its path."""

    def run(
        *args: str, pythonpath: Sequence[Path] = (), cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        return subprocess.run(
            [sys.executable, "-m", "protoevents.proxy.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or ROOT,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture
def fake_proxy() -> Iterator[FakeProxy]:
    """An in-memory EventProxyService on a loopback port, stopped after the test."""
    proxy = FakeProxy().start()
    yield proxy
    proxy.stop()


@pytest.fixture
def processes() -> Iterator[list[ServeProcess]]:
    """`protoevents serve` subprocesses a test starts; killed after it if still running."""
    started: list[ServeProcess] = []
    yield started
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs; skips when it cannot be mounted (not root, or no CAP_SYS_ADMIN)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def make_recorder(tmp_path: Path) -> Iterator[type[Recorder]]:
    """Recorders spooling under tmp_path, closed after the test."""
    made: list[Recorder] = []

    def make(proxy: str, **options: object) -> Recorder:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("component", "controller")
        options.setdefault("event_types", [ClusterEventType])
        options.setdefault("node", "node-1")
        options.setdefault("backoff_max", 0.2)
        recorder = Recorder(proxy=proxy, **options)  # type: ignore[arg-type]
        made.append(recorder)
        return recorder

    yield make  # type: ignore[misc]
    for recorder in made:
        recorder.close(5)


# -- databases ------------------------------------------------------------------------------


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


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL; skips (fails in CI) when it is not reachable."""
    url = os.environ.get("PROTOEVENTS_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {url}: set PROTOEVENTS_TEST_REDIS_URL ({exc})"
        unavailable(reason)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted after the test."""
    prefix = f"protoevents_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_channel() -> str:
    """A channel no other test publishes on (pub/sub channels are server-wide)."""
    return f"protoevents-test:{uuid.uuid4().hex}"
