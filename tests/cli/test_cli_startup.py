"""The command line starts light: `--help`, every command's `--help` and `types` import none of
the heavy libraries (gRPC, SQLAlchemy, Alembic, Redis, ...): each command imports them in its
run(), so that only the commands that use them pay for them. Checked by what a fresh
interpreter holds in sys.modules, not by timing."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from protoevents.proxy.cli import build_parser
from tests.support.paths import ROOT

HEAVY = (
    "grpc",
    "grpc_tools",
    "grpc_health",
    "sqlalchemy",
    "alembic",
    "redis",
    "psycopg",
    "psutil",
    "prometheus_client",
)

# Runs the command line in-process as `protoevents` does, then says which modules it imported
# (on stderr, after whatever the command printed).
PROBE = """
import json, sys
from protoevents.proxy.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def modules_loaded_by(*argv: str) -> set[str]:
    """The modules `protoevents ARGV` imported; asserts it exited 0."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return set(report["modules"])


def loaded_by(*argv: str) -> set[str]:
    """The top-level packages `protoevents ARGV` imported; asserts it exited 0."""
    return {name.split(".")[0] for name in modules_loaded_by(*argv)}


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command and action of the parser, as the words that name it."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(commands(sub, (*prefix, name)))
    return found


@pytest.mark.parametrize(
    "argv", [(), *commands(build_parser())], ids=lambda words: " ".join(words) or "protoevents"
)
def test_help_imports_no_heavy_library_nor_protobuf(argv: tuple[str, ...]) -> None:
    loaded = loaded_by(*argv, "--help")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    # Help is text from the parsers alone: not even the protobuf runtime.
    assert "google" not in loaded


@pytest.mark.parametrize(
    "argv",
    [("types",), ("types", "--json"), ("types", "--category", "network")],
    ids=" ".join,
)
def test_types_imports_no_heavy_library(argv: tuple[str, ...]) -> None:
    loaded = loaded_by(*argv)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_imports_no_other_command() -> None:
    commands_loaded = {
        m for m in modules_loaded_by("types") if m.startswith("protoevents.proxy.cli.")
    }
    assert commands_loaded == {"protoevents.proxy.cli.types", "protoevents.proxy.cli.output"}


def test_the_probe_sees_what_a_command_imports(tmp_path: Path) -> None:
    """The commands that need them still load them (so the checks above can fail)."""
    loaded = loaded_by("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'events.db'}")
    assert {"sqlalchemy", "alembic"} <= loaded
