"""Fixtures of the fault-injection tests: a throwaway PostgreSQL cluster, recorder loads."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Load
from tests.faults.pg_cluster import ClusterUnavailableError, PostgresCluster


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
