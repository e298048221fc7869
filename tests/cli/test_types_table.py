"""`protoevents types` fits the terminal: descriptions wrap or go under their row, names are
never cut, and --json stays exact whatever the width."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from protoevents.proxy.cli.types import HEADER, table
from protoevents.recorder.registry import EventType, Registry
from tests.support.paths import ROOT

BUILTIN = Registry.builtin()


def types_output(*args: str, columns: str | None) -> str:
    """`protoevents types ARGS` with stdout a pipe, COLUMNS set to `columns` (unset: None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    done = subprocess.run(
        [sys.executable, "-m", "protoevents.proxy.cli", "types", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


def names_shown(lines: list[str]) -> list[str]:
    """The first word of each line that starts a row (not a wrapped or stacked continuation)."""
    return [line.split()[0] for line in lines[1:] if line and not line[0].isspace()]


def words(text: str) -> str:
    return " ".join(text.split())


def test_80_columns_hold_every_line_with_names_whole() -> None:
    lines = types_output(columns="80").splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == list(HEADER[:-1])  # the description goes under each row
    assert names_shown(lines) == [t.short_name for t in BUILTIN]
    for event_type in BUILTIN:  # no description lost to the wrapping
        assert words(event_type.description) in words("\n".join(lines))


def test_not_a_terminal_fits_100_columns() -> None:
    lines = types_output(columns=None).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert names_shown(lines) == [t.short_name for t in BUILTIN]


def test_a_medium_terminal_wraps_descriptions_beside_their_rows() -> None:
    lines = types_output(columns="120").splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[0].split() == list(HEADER)
    assert names_shown(lines) == [t.short_name for t in BUILTIN]
    assert len(lines) > len(BUILTIN) + 1  # some descriptions took two lines
    description_at = lines[0].index("DESCRIPTION")
    continued = [line for line in lines[1:] if line[0].isspace()]
    assert all(len(line) - len(line.lstrip()) == description_at for line in continued)


def test_a_wide_terminal_shows_qualified_names_one_line_each() -> None:
    lines = types_output(columns="250").splitlines()
    assert len(lines) == len(BUILTIN) + 1
    assert names_shown(lines) == [t.name for t in BUILTIN]
    assert [line.split(None, 4)[4] for line in lines[1:]] == [t.description for t in BUILTIN]


@pytest.mark.parametrize("args", [(), ("--category", "network")], ids=["all", "network"])
def test_json_is_the_same_at_every_width(args: tuple[str, ...]) -> None:
    outputs = {types_output("--json", *args, columns=c) for c in ("40", "80", "300", None)}
    assert len(outputs) == 1
    shown = json.loads(outputs.pop())
    category = args[1] if args else None
    assert shown == [t.as_dict() for t in BUILTIN.select(category=category)]


def kind(enum: str, value: str, description: str = "Something happened.") -> EventType:
    return EventType(f"acme.{enum}.{value}", 1, 2, "misc", description, "acme", f"acme.{enum}")


def test_a_value_name_two_enums_share_stays_qualified() -> None:
    registry = Registry([kind("A", "STARTED"), kind("B", "STARTED"), kind("B", "B_STOPPED")])
    lines = table(list(registry), registry, width=60)
    assert names_shown(lines) == ["acme.A.STARTED", "acme.B.STARTED", "B_STOPPED"]


def test_a_name_wider_than_the_terminal_is_never_cut() -> None:
    long_value = "X" * 90
    registry = Registry([kind("A", long_value, "Word " * 30)])
    lines = table(list(registry), registry, width=50)
    assert names_shown(lines) == [long_value]
    described = [line for line in lines if line[0].isspace()]  # still wrapped to the width
    assert words("\n".join(described)) == "DESCRIPTION " + words("Word " * 30)
    assert all(len(line) <= 50 for line in described)
