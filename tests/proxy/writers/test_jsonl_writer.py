"""The JSON lines writer: a torn last line cut after a crash, the fields an event shows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.jsonl import JsonLinesWriter
from tests.support.ingest_helpers import make_events


def test_a_torn_last_line_is_cut_and_its_changes_are_written_once(tmp_path: Path) -> None:
    """`serve` SIGKILLed mid-write leaves a line without its newline: the next start cuts it
    (the log's bookmark never passed its changes) instead of failing to start."""
    path = tmp_path / "changes.jsonl"
    first, second = make_events(2)
    writer = JsonLinesWriter(path)
    asyncio.run(writer.write([Change(CREATED, first)]))
    asyncio.run(writer.close())
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"kind":"CREATED","event":{"id":"01')

    writer = JsonLinesWriter(path)
    asyncio.run(writer.write([Change(CREATED, first), Change(CREATED, second)]))
    asyncio.run(writer.close())
    assert path.read_bytes().startswith(whole)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["event"]["id"] for line in lines] == [first.id, second.id]


def test_a_forwarded_event_carries_its_site_and_a_local_one_none(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    local, forwarded = make_events(2)
    forwarded.site = "site-a"
    writer = JsonLinesWriter(path)
    asyncio.run(writer.write([Change(CREATED, local), Change(CREATED, forwarded)]))
    asyncio.run(writer.close())
    shown = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert [event.get("site") for event in shown] == [None, "site-a"]


def test_a_forced_alert_shows_its_flag_and_a_plain_event_none(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    plain, forced = make_events(2)
    forced.alert = True
    writer = JsonLinesWriter(path)
    asyncio.run(writer.write([Change(CREATED, plain), Change(CREATED, forced)]))
    asyncio.run(writer.close())
    shown = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert [event.get("alert") for event in shown] == [None, True]
