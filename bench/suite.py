"""The benchmark suite's frame: scenarios, targets, running them with progress, table, JSON."""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Target:
    """A figure the project promises: `value >= limit` (at_least) or `value <= limit`."""

    limit: float
    at_least: bool
    unit: str
    text: str

    def verdict(self, value: float) -> str:
        """'met' or 'missed', and by how much, as a factor of the limit."""
        if self.at_least:
            if value >= self.limit:
                return f"met ({value / self.limit:.2f}x the target)"
            if value <= 0:
                return "missed (nothing measured)"
            return f"missed by {self.limit / value:.2f}x ({value / self.limit:.1%} of the target)"
        if value <= self.limit:
            return "met" if value <= 0 else f"met ({self.limit / value:.1f}x under)"
        return f"missed by {value / self.limit:.2f}x ({value - self.limit:,.3g} {self.unit} over)"


@dataclass
class Row:
    """One measured figure: the median of `samples`, shown as `shown`."""

    measure: str
    value: float
    unit: str
    shown: str
    ratio: str = ""
    target: Target | None = None
    samples: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.target.verdict(self.value) if self.target else ""


def rate_row(
    measure: str, samples: Sequence[float], ratio: str = "", target: Target | None = None
) -> Row:
    """A throughput row: the median of `samples` in events/s."""
    value = statistics.median(samples)
    return Row(measure, value, "events/s", f"{value:,.0f} events/s", ratio, target, list(samples))


def times(numerator: float, denominator: float) -> str:
    """A ratio as shown: 2 significant figures."""
    if denominator <= 0:
        return "n/a"
    ratio = numerator / denominator
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


class Skipped(Exception):  # noqa: N818 (it is not an error: the scenario did not apply)
    """Raised by a scenario that cannot run here; the message says why and how to enable it."""


@dataclass
class Context:
    """What a scenario gets: the mode, the number of runs, the PostgreSQL server, a status."""

    quick: bool
    runs: int
    postgres: str | None  # URL of the server's maintenance database, None when unreachable
    postgres_missing: str = ""
    status: Callable[[str], None] = lambda _: None

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def require_postgres(self) -> str:
        if self.postgres is None:
            raise Skipped(self.postgres_missing)
        return self.postgres


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context], list[Row]]
    seconds: tuple[float, float]  # rough duration (quick, full) for the progress bar


@dataclass
class Outcome:
    scenario: Scenario
    rows: list[Row] = field(default_factory=list)
    skipped: str = ""
    error: str = ""
    seconds: float = 0.0


def run_all(scenarios: Sequence[Scenario], context: Context, console: Console) -> list[Outcome]:
    """Run `scenarios` in order under a progress bar (on `console`)."""
    outcomes = []
    estimate = [s.seconds[0] if context.quick else s.seconds[1] for s in scenarios]
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=sum(estimate))
        for scenario, seconds in zip(scenarios, estimate, strict=True):
            prefix = f"{scenario.name}"

            def status(text: str, prefix: str = prefix) -> None:
                progress.update(task, description=f"{prefix}: {text}")

            status("starting")
            context.status = status
            outcome = Outcome(scenario)
            started = time.monotonic()
            try:
                outcome.rows = scenario.run(context)
            except Skipped as exc:
                outcome.skipped = str(exc)
            except Exception as exc:  # a broken scenario must not hide the others' results
                outcome.error = f"{type(exc).__name__}: {exc}"
                console.print(f"[red]{scenario.name} failed[/red]\n{traceback.format_exc()}")
            outcome.seconds = time.monotonic() - started
            outcomes.append(outcome)
            progress.advance(task, seconds)
        progress.update(task, description="done")
    return outcomes


def table(outcomes: Sequence[Outcome]) -> Table:
    """The results as a Markdown table (it reads the same in a terminal and in the README)."""
    result = Table(box=box.MARKDOWN, show_edge=True, pad_edge=True)
    for header in ("scenario", "measure", "median", "ratio (same run)", "target", "verdict"):
        result.add_column(header, overflow="fold")
    for outcome in outcomes:
        for row in outcome.rows:
            target = row.target.text if row.target else ""
            cells = (outcome.scenario.name, row.measure, row.shown, row.ratio, target, row.verdict)
            result.add_row(*(Text(cell) for cell in cells))  # as is: "[bench]" is no markup
    return result


def markdown(rendered: Table) -> str:
    """The table as Markdown text, without the blank edge lines rich pads it with."""
    console = Console(width=10_000, file=io.StringIO(), color_system=None)
    with console.capture() as captured:
        console.print(rendered)
    lines = (line.rstrip() for line in captured.get().splitlines())
    return "\n".join(line for line in lines if line)


def notes(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per scenario skipped or failed."""
    lines = []
    for outcome in outcomes:
        if outcome.skipped:
            lines.append(f"skipped {outcome.scenario.name}: {outcome.skipped}")
        if outcome.error:
            lines.append(f"FAILED {outcome.scenario.name}: {outcome.error}")
    return lines


def git_commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return found.stdout.strip()


def to_json(
    outcomes: Sequence[Outcome],
    command: str,
    quick: bool,
    started: datetime,
    seconds: float,
    load_at_start: Sequence[float],
) -> dict[str, Any]:
    """The run as a JSON document: every row with its samples, the machine and the commit."""
    return {
        "command": command,
        "mode": "quick" if quick else "full",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "python": platform.python_version(),
            "system": platform.platform(terse=True),
        },
        "scenarios": {
            outcome.scenario.name: {
                "title": outcome.scenario.title,
                "seconds": round(outcome.seconds, 1),
                "skipped": outcome.skipped or None,
                "error": outcome.error or None,
                "rows": [
                    {
                        **asdict(row),
                        "target": asdict(row.target) if row.target else None,
                        "verdict": row.verdict or None,
                    }
                    for row in outcome.rows
                ],
            }
            for outcome in outcomes
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def now() -> datetime:
    return datetime.now(UTC)


def command_line(argv: Sequence[str] | None = None) -> str:
    return " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
