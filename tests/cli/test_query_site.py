"""`protoevents query --site` and `tail --site` against a running `serve`, and the site in
their table, lines and JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.cli.event_filters import EVENT_HEADER, event_table
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import event_pb2
from tests.support.commands import CliRunner, Lines
from tests.support.paths import ROOT
from tests.support.query_events import stored_event
from tests.support.serve_process import ServeProcess

WITH_SITE = [*EVENT_HEADER[:4], "SITE", *EVENT_HEADER[4:]]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A `serve` whose database holds a local event and two forwarded from sites (stored
    straight into it: recorders never set a site)."""
    data = tmp_path_factory.mktemp("proxy")
    served = ServeProcess(data)
    engine = create_engine(f"sqlite:///{data}/events.db")
    stored = [
        stored_event(1, message="site test here"),
        stored_event(2, message="site test from a", site="site-a"),
        stored_event(3, message="site test from b", site="site-b"),
    ]
    SqlWriter(engine).write_blocking([Change(CREATED, e) for e in stored])
    engine.dispose()
    yield served
    served.stop(signal.SIGTERM)


def test_query_filters_by_site_and_shows_a_site_column_when_one_has_a_site(
    proxy: ServeProcess, run_cli: CliRunner
) -> None:
    def query(*args: str) -> list[list[str]]:
        done = run_cli("query", "--proxy", proxy.address, "--contains", "site test", *args)
        assert done.returncode == 0, done.stderr
        return [line.split() for line in done.stdout.splitlines()]

    header, *found = query("--site", "site-a")
    assert header == WITH_SITE
    assert [(row[4], row[5], " ".join(row[7:])) for row in found] == [
        ("site-a", "node-1/cluster-controller", "site test from a")
    ]
    # No --site: every site, and the local event with "-" for its site.
    header, *found = query()
    assert header == WITH_SITE
    assert [(row[4], " ".join(row[7:])) for row in found] == [
        ("site-b", "site test from b"),
        ("site-a", "site test from a"),
        ("-", "site test here"),
    ]
    # Only local events shown: no SITE column.
    header, *found = query("--until", "2023-11-14T22:13:22")
    assert header == EVENT_HEADER
    assert [" ".join(row[6:]) for row in found] == ["site test here"]
    assert query("--site", "site-c") == [EVENT_HEADER]

    lines = run_cli(
        "query", "--proxy", proxy.address, "--contains", "site test", "--json", "--oldest-first"
    ).stdout.splitlines()
    assert [json.loads(line).get("site") for line in lines] == [None, "site-a", "site-b"]


def test_tail_filters_by_site_and_shows_it(proxy: ServeProcess) -> None:
    def tail(*args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "protoevents.proxy.cli", "tail", "--proxy", proxy.address]
        return subprocess.Popen(
            [*command, "-n", "5", "--contains", "site test", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def replayed(process: subprocess.Popen[str], last: str) -> list[str]:
        """The lines of the replay, up to the one showing `last`, then Ctrl-C."""
        try:
            text = Lines(process).until(last)
        finally:
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=30)
        assert (process.returncode, errors) == (130, "")
        return text.splitlines()

    (line,) = replayed(tail("--site", "site-b"), "site test from b")
    assert "  REPLAYED  " in line
    assert "  site=site-b  node-1/cluster-controller  Node/node-1  site test from b" in line
    every = replayed(tail(), "site test from b")
    assert [line.rsplit("  ", 1)[1] for line in every] == [
        "site test here",
        "site test from a",
        "site test from b",
    ]
    assert "site=" not in every[0] and "  site=site-a  " in every[1]
    (shown,) = replayed(tail("--site", "site-a", "--json"), '"site-a"')
    assert json.loads(shown)["event"]["site"] == "site-a"


def test_a_table_of_events_without_sites_has_no_site_column() -> None:
    local = event_pb2.Event(id="x", message="here")
    forwarded = event_pb2.Event(id="y", message="there", site="site\x1b[31m")
    assert event_table([local])[0] == EVENT_HEADER
    header, found = event_table([local, forwarded])
    assert header == WITH_SITE
    assert [row[4] for row in found] == ["-", "site\\x1b[31m"]  # escaped for the terminal
