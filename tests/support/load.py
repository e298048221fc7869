"""Load from recorder processes (tests.support.load_process), for the fault tests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT


@dataclass
class Outcome:
    """What the recorder processes recorded (ids) and how their recorders ended."""

    ids: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


class Load:
    """`count` recorder processes (tests.support.load_process) streaming to `proxy`, each at
    `rate` events per second, until `finish`."""

    def __init__(self, proxy: str, spool: Path, count: int, rate: int) -> None:
        spool.mkdir(parents=True, exist_ok=True)
        self.logs = [spool / f"c{n}.log" for n in range(count)]
        self.processes = []
        for n, log in enumerate(self.logs):
            with log.open("w") as errors:
                command = ["tests.support.load_process", proxy, str(spool), f"c{n}", str(rate)]
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", *command],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=errors,
                        text=True,
                        cwd=ROOT,
                    )
                )

    def finish(self, timeout: float = 180) -> Outcome:
        """End the load; each process drains its recorder and reports."""
        outcome = Outcome()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process, log in zip(self.processes, self.logs, strict=True):
            assert process.stdout is not None
            out = process.stdout.read()  # the process writes it only when it ends
            assert process.wait(timeout) == 0, log.read_text()[-3000:]
            *ids, report = out.splitlines()
            outcome.ids += ids
            outcome.reports.append(json.loads(report))
        return outcome

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
