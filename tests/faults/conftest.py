"""Fixtures of the fault-injection tests: a throwaway PostgreSQL cluster, recorder loads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.load import Load
from tests.support.pg_cluster import ClusterUnavailableError, PostgresCluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the tests' own, which they may stop and start. Skips when
    initdb is not installed (fails under CI=true)."""
    try:
        cluster = PostgresCluster()
    except ClusterUnavailableError as exc:
        reason = f"no throwaway PostgreSQL cluster: {exc}"
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(reason)
        pytest.skip(reason)
    yield cluster
    cluster.remove()


@pytest.fixture
def loads() -> Iterator[list[Load]]:
    """Recorder load processes a test starts; killed after it."""
    started: list[Load] = []
    yield started
    for load in started:
        load.kill()
