"""Shared fixtures: paths of the checkout and a runner for the `protoevents` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from tests.fake_proxy import FakeProxy

if TYPE_CHECKING:
    from tests.serve_process import ServeProcess

pytest_plugins = ["tests.db_fixtures", "tests.redis_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


def copy_generated(out: Path) -> None:
    """Copy generated/ to `out` (without caches), its links to the hand-written folders still
    pointing to them."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "generated", out, symlinks=True, ignore=ignore)
    for link in (p for p in (out / "protoevents").iterdir() if p.is_symlink()):
        target = (ROOT / "generated" / "protoevents" / link.readlink()).resolve()
        link.unlink()
        link.symlink_to(target)


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
