"""Load from recorder processes, and polling of the database, for the fault tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.conftest import ROOT
from tests.test_pipeline import stored_counts


def poll(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    """Wait until `condition()` holds, checking `every` seconds; fail naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def assert_each_stored_once(url: str, ids: list[str]) -> None:
    """The database holds exactly `ids`, each once (a short summary when it does not: a diff
    of a million ids would take longer than the test)."""
    stored = stored_counts(url)
    missing = sorted(set(ids) - set(stored))
    extra = sorted(set(stored) - set(ids))
    repeated = {event_id: count for event_id, count in stored.items() if count != 1}
    summary = f"{len(missing)} missing {missing[:5]}, {len(extra)} not recorded {extra[:5]}"
    assert (missing, extra, repeated) == ([], [], {}), f"{summary}, counts not 1: {repeated}"


def row_count(url: str) -> int:
    """Rows in `events`; -1 while the database does not answer."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    except sa.exc.OperationalError:
        return -1
    finally:
        engine.dispose()


@dataclass
class Outcome:
    """What the recorder processes recorded (ids) and how their recorders ended."""

    ids: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


class Load:
    """`count` recorder processes (tests.faults.load) streaming to `proxy`, each at `rate`
    events per second, until `finish`."""

    def __init__(self, proxy: str, spool: Path, count: int, rate: int) -> None:
        spool.mkdir(parents=True, exist_ok=True)
        self.logs = [spool / f"c{n}.log" for n in range(count)]
        self.processes = []
        for n, log in enumerate(self.logs):
            with log.open("w") as errors:
                command = ["tests.faults.load", proxy, str(spool), f"c{n}", str(rate)]
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
