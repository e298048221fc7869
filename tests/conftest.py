"""Shared fixtures: paths of the checkout and a runner for the `protoevents` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fake_proxy import FakeProxy

if TYPE_CHECKING:
    from tests.serve_process import ServeProcess

pytest_plugins = ["tests.db_fixtures", "tests.redis_fixtures"]

ROOT = Path(__file__).resolve().parent.parent

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


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
            [sys.executable, "-m", "server.cli", *args],
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
