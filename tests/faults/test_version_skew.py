"""Version skew: a component built from newer protos records into a proxy that does not know
its event type yet. The proxy quarantines those events (acknowledged, listed, logged), stores
the known ones, and stores the quarantined ones exactly once when it is restarted with the
type; a further restart stores nothing twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.commands import CliRunner
from tests.support.paths import ROOT
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.user_protos import write_user_protos

WIDGET_MODULE = "acme.widgets.v1.widget_events_pb2"
JAMMED = "acme.widgets.v1.WidgetEventType.WIDGET_EVENT_TYPE_JAMMED"
NEWER_EVENTS = 300
KNOWN_EVENTS = 200

RECORD = textwrap.dedent(
    """\
    import json, sys
    from acme.widgets.v1.widget_events_pb2 import WidgetEventType
    from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
    from protoevents.recorder import Recorder

    address, spool, newer, known = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with Recorder(
        component="widget-maker", event_types=[WidgetEventType, ClusterEventType],
        proxy=address, spool_dir=spool, batch_size=64,
    ) as events:
        ids = {"newer": [], "known": []}
        for n in range(max(newer, known)):
            if n < newer:
                jam = "WIDGET_EVENT_TYPE_JAMMED"
                ids["newer"].append(events.record(jam, f"widget {n} jammed", data={"n": n}))
            if n < known:
                elected = "CLUSTER_EVENT_TYPE_LEADER_ELECTED"
                ids["known"].append(events.record(elected, f"node-{n} is the leader"))
        drained = events.drain(60)
        stats = events.stats()
    print(json.dumps({"ids": ids, "drained": drained, "dropped": dict(stats.dropped),
                      "rejected": dict(stats.rejected)}))
    """
)


def stored(data_dir: Path) -> dict[str, tuple[int, str, str, int]]:
    """id -> (count, type, category, severity) of every stored event."""
    engine = sa.create_engine(f"sqlite:///{data_dir}/events.db", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT id, count, type, category, severity FROM events")
            ).all()
    finally:
        engine.dispose()
    return {str(r[0]): (int(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows}


def listed(run_cli: CliRunner, data_dir: Path) -> dict[str, object]:
    result = run_cli("quarantine", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def stop(proxy: ServeProcess) -> str:
    """SIGTERM, exit 0; returns what the proxy logged."""
    assert proxy.stop(signal.SIGTERM) == 0
    assert proxy.process.stderr is not None
    return proxy.process.stderr.read()


def test_events_of_a_newer_type_are_quarantined_then_stored_once_the_proxy_knows_it(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = tmp_path / "generated"
    protos = write_user_protos(tmp_path)
    made = run_cli("gen", "--protos", str(protos), "--out", str(generated))
    assert made.returncode == 0, made.stderr
    data_dir = tmp_path / "data"

    # 1. The proxy from older protos: known events stored, the newer ones quarantined.
    older = ServeProcess(data_dir)
    recorder = subprocess.run(
        [sys.executable, "-c", RECORD, older.address, str(tmp_path / "spool"),
         str(NEWER_EVENTS), str(KNOWN_EVENTS)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(generated)},
    )  # fmt: skip
    assert recorder.returncode == 0, recorder.stderr
    outcome = json.loads(recorder.stdout)
    assert (outcome["drained"], outcome["dropped"], outcome["rejected"]) == (True, {}, {})
    newer, known = outcome["ids"]["newer"], outcome["ids"]["known"]
    poll(lambda: set(stored(data_dir)) == set(known), 30, "the known events stored")
    held = listed(run_cli, data_dir)
    assert held["types"] == [
        {"type": JAMMED, "count": NEWER_EVENTS, "oldest": held["types"][0]["oldest"],  # type: ignore[index]
         "newest": held["types"][0]["newest"]}  # type: ignore[index]
    ]  # fmt: skip
    events = held["events"]
    assert isinstance(events, list)
    assert sorted(e["event"]["id"] for e in events) == sorted(newer)
    assert {e["reason"] for e in events} == {f"type {JAMMED!r} is not a known event type"}
    table = run_cli("quarantine", "--data-dir", str(data_dir))
    assert table.returncode == 0
    assert f"{NEWER_EVENTS} event(s) of 1 type(s) in quarantine" in table.stdout
    logged = stop(older)
    warnings = [line for line in logged.splitlines() if "quarantined" in line]
    assert warnings and f"event(s) of type {JAMMED}, unknown to this proxy" in warnings[0]
    assert len(warnings) == 1, "one warning per type per minute"

    # 2. The proxy restarted with the type: every quarantined event stored exactly once.
    monkeypatch.setenv("PYTHONPATH", str(generated))
    current = ServeProcess(data_dir, "--module", WIDGET_MODULE)
    everything = set(newer) | set(known)
    poll(lambda: set(stored(data_dir)) == everything, 30, "the released events stored")
    assert listed(run_cli, data_dir)["count"] == 0
    logged = stop(current)
    assert f"released {NEWER_EVENTS} quarantined event(s)" in logged
    rows = stored(data_dir)
    assert {rows[i] for i in newer} == {(1, JAMMED, "widget", 4)}  # SEVERITY_ERROR
    assert all(rows[i][0] == 1 for i in known)

    # 3. Once more: nothing to release, nothing stored or written twice.
    again = ServeProcess(data_dir, "--module", WIDGET_MODULE)
    logged = stop(again)
    assert "released" not in logged
    assert stored(data_dir) == rows
    written = Counter(again.written_ids())
    assert set(written) == everything
    assert set(written.values()) == {1}
