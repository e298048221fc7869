"""`python -m bench.compare`: two sets of suite results (say, runs of two commits taken in
turns) as one Markdown table: each figure's median over every run of each set, and after/before.

    python -m bench.compare --before a1.json a2.json --after b1.json b2.json

Each figure pools the per-run samples of its row over the set's files (the CPU row pools each
process's samples); a figure that only one set has is left out.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CPU_PARTS = ("recorder", "proxy", "database")
# What a run's size or its events' size adds to a measure's name: ", 10,000 events,
# acknowledged", " (326 B serialized)".
_SIZE = re.compile(r", [\d,]+ events.*$| \([\d,]+ B serialized\)")

Figures = dict[tuple[str, str], list[float]]


def _figures(paths: Sequence[Path]) -> Figures:
    """(scenario, measure) -> every sample of it in the files."""
    pooled: Figures = {}
    for path in paths:
        for name, scenario in json.loads(path.read_text())["scenarios"].items():
            for row in scenario.get("rows") or []:
                for measure, samples in _row_samples(row):
                    pooled.setdefault((name, measure), []).extend(samples)
    return pooled


def _row_samples(row: dict[str, Any]) -> list[tuple[str, list[float]]]:
    measure = _SIZE.sub("", str(row["measure"])).replace(" p50 / p99", " p50")
    per_process = row.get("detail", {}).get("samples_us")
    if per_process:  # the CPU row: one figure per process
        return [
            (f"CPU per event, {part} (µs)", [float(run[i]) for run in per_process])
            for i, part in enumerate(_CPU_PARTS)
        ]
    samples = [float(v) for v in row.get("samples") or []] or [float(row["value"])]
    return [(f"{measure} ({row['unit']})", samples)]


def _shown(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(before: Figures, after: Figures) -> str:
    """The Markdown table of the figures both sets have."""
    lines = [
        "| scenario | figure | before (median) | after (median) | after / before |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, old in before.items():
        new = after.get(key)
        if not new:
            continue
        a, b = statistics.median(old), statistics.median(new)
        ratio = f"{b / a:.2f}x" if a else "-"
        lines.append(f"| {key[0]} | {key[1]} | {_shown(a)} | {_shown(b)} | {ratio} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--before", nargs="+", type=Path, required=True, metavar="JSON")
    parser.add_argument("--after", nargs="+", type=Path, required=True, metavar="JSON")
    args = parser.parse_args(argv)
    print(table(_figures(args.before), _figures(args.after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
