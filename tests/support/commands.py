"""Running commands in subprocesses: the type of the `run_cli` fixture, a Python script in a
fresh interpreter, and a subprocess's stdout read line by line."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.support.paths import ROOT

CliRunner = Callable[..., subprocess.CompletedProcess[str]]
DEADLINE = 30.0


def run_python(
    *args: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter on `args` in a fresh process, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def run_script(script: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a fresh interpreter (a component process of its own)."""
    return run_python("-c", script)


class Lines:
    """The stdout of a subprocess, line by line, read on a thread (no blocking reads)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.text = ""
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream], daemon=True).start()

    def until(self, needle: str, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            self.text += self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        return self.text
