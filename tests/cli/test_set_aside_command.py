"""`protoevents set-aside`: list what a real `serve`'s Redis writer refused (a key of the wrong
type) and write it again once the key is fixed."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import redis

from protoevents.proxy.writers.redis import RedisOptions, RedisWriter
from protoevents.recorder.setaside import SetAside, make_batch, read_batches
from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.commands import CliRunner
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.stored import assert_each_stored_once, stored_counts


def _config(path: Path, data: Path, db: str, redis_url: str, prefix: str) -> Path:
    path.write_text(
        f'data_dir = "{data}"\ndb = "{db}"\nwriter_max_attempts = 2\n'
        '[[writers]]\nname = "db"\nkind = "sql"\n'
        f'[[writers]]\nname = "recent"\nkind = "redis"\nurl = "{redis_url}"\n'
        f'key_prefix = "{prefix}"\npublish = false\nconnect_timeout_s = 1\n'
    )
    return path


def _set_aside(store: Path) -> list[str]:
    return [e.id for b in read_batches(store) for e in b.events]


def _check_listing(run_cli: CliRunner, config: Path, data: Path, first_key: str) -> None:
    listed = run_cli("set-aside", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    summary = json.loads(listed.stdout)
    assert summary["changes"] == 5
    (writer,) = summary["writers"]
    assert (writer["writer"], writer["changes"], writer["created"]) == ("recent", 5, 5)
    assert writer["bytes"] > 0 and writer["oldest"] <= writer["newest"]
    reasons = {r["reason"]: r["count"] for r in writer["reasons"]}
    assert sorted(reasons.values()) == [2, 3]
    assert all("WRONGTYPE" in reason for reason in reasons)
    assert [n for r, n in reasons.items() if first_key in r] == [3]
    table = run_cli("set-aside", "--data-dir", str(data))
    assert table.returncode == 0, table.stderr
    assert "recent" in table.stdout and "5 change(s) set aside for 1 writer(s)" in table.stdout
    assert f"recent: 3 x Redis refused the batch: WRONGTYPE {first_key}" in table.stdout


def _check_refusals(run_cli: CliRunner, config: Path, proxy: ServeProcess) -> None:
    running = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(config))
    assert running.returncode == 2
    assert len(running.stderr.strip().splitlines()) == 1, running.stderr
    assert "in use by process" in running.stderr and str(proxy.process.pid) in running.stderr
    unknown = run_cli("set-aside", "replay", "--writer", "nope", "--config", str(config))
    assert unknown.returncode == 2
    assert "no writer named 'nope'" in unknown.stderr and "db, recent" in unknown.stderr


def _unreachable_redis() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


def _check_held_and_down(run_cli: CliRunner, config: Path, store: Path, down: Path) -> None:
    """With serve stopped: a store another process holds is refused; with Redis down (the
    config `down`) the replay stops and keeps everything."""
    with SetAside(store):  # held by another process (here, this one): refused, one line
        held = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(config))
    assert held.returncode == 2
    assert "in use by another process" in held.stderr
    assert len(held.stderr.strip().splitlines()) == 1, held.stderr
    stopped = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(down))
    assert stopped.returncode == 1, stopped.stderr
    assert "wrote 0, still refused 0, left 5" in stopped.stdout
    assert "stopped: ConnectionError" in stopped.stdout
    assert len(_set_aside(store)) == 5


def _check_nothing_left(run_cli: CliRunner, config: Path) -> None:
    empty = json.loads(run_cli("set-aside", "--config", str(config), "--json").stdout)
    assert (empty["changes"], empty["writers"]) == (0, [])
    assert "nothing set aside" in run_cli("set-aside", "--config", str(config)).stdout
    again = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(config))
    assert again.returncode == 0 and "nothing set aside for writer recent" in again.stdout


def test_set_aside_lists_what_a_writer_refused_and_replays_it_once_the_cause_is_fixed(
    run_cli: CliRunner,
    tmp_path: Path,
    processes: list[ServeProcess],
    redis_url: str,
    redis_prefix: str,
) -> None:
    keys = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix))
    first = event_pb2.EventSource(node="node-8", component="poisoned")
    second = event_pb2.EventSource(node="node-9", component="poisoned")
    first_key, second_key = (keys.stream_key(event_pb2.Event(source=s)) for s in (first, second))
    client = redis.Redis.from_url(redis_url)
    client.set(first_key, "not a stream")
    client.set(second_key, "not a stream either")
    data = tmp_path / "data"
    db = f"sqlite:///{tmp_path}/events.db"
    config = _config(tmp_path / "proxy.toml", data, db, redis_url, redis_prefix)
    proxy = ServeProcess(data, "--config", str(config), "--db", db)
    processes.append(proxy)
    good, bad_first = make_events(30), make_events(3, source=first)
    bad_second = make_events(2, source=second)
    for batch in (good[:10], bad_first, good[10:20], bad_second, good[20:]):
        request = proxy_service_pb2.RecordBatchRequest(events=batch)
        assert proxy.stub.RecordBatch(request, timeout=10).result.accepted_count == len(batch)
    store = data / "set-aside" / "recent"
    poll(lambda: len(_set_aside(store)) == 5, 60, "5 changes set aside for the Redis writer")

    _check_listing(run_cli, config, data, first_key)  # while serve runs
    _check_refusals(run_cli, config, proxy)
    assert len(_set_aside(store)) == 5
    poll(lambda: client.xlen(keys.stream_key(good[0])) == 30, 30, "the good events in Redis")
    assert proxy.stop(signal.SIGTERM) == 0

    down = _config(tmp_path / "down.toml", data, db, _unreachable_redis(), redis_prefix)
    _check_held_and_down(run_cli, config, store, down)

    client.delete(first_key)  # the first key fixed: its 3 are written, the other 2 kept
    partly = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(config), "--json")
    assert partly.returncode == 1, partly.stderr
    report = json.loads(partly.stdout)
    assert (report["written"], report["refused"], report["left"]) == (3, 2, 0)
    ((reason, count),) = report["reasons"].items()
    assert count == 2 and f"WRONGTYPE {second_key}" in reason
    assert sorted(_set_aside(store)) == sorted(e.id for e in bad_second)
    assert client.xlen(first_key) == 3
    listed = json.loads(run_cli("set-aside", "--data-dir", str(data), "--json").stdout)
    assert [w["changes"] for w in listed["writers"]] == [2]

    client.delete(second_key)
    fixed = run_cli("set-aside", "replay", "--writer", "recent", "--config", str(config))
    assert fixed.returncode == 0, fixed.stderr
    assert "writer recent: wrote 2, still refused 0, left 0" in fixed.stdout
    assert client.xlen(second_key) == 2
    stored = client.hgetall(keys.events_key(event_pb2.Event(source=second)))
    assert sorted(k.decode() for k in stored) == sorted(e.id for e in bad_second)
    assert client.xlen(keys.stream_key(good[0])) == 30  # nothing else written twice
    _check_nothing_left(run_cli, config)
    assert_each_stored_once(db, [e.id for e in good + bad_first + bad_second])
    client.close()


def test_replay_through_the_sql_writer_stores_new_events_and_applies_updates(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    db = f"sqlite:///{tmp_path}/events.db"
    config = tmp_path / "proxy.toml"
    config.write_text(f'data_dir = "{data}"\ndb = "{db}"\n[[writers]]\nname = "db"\nkind = "sql"\n')
    created = make_events(3)
    for event in created:  # as ingest hands a new event on
        event.count = 1
    updated = event_pb2.Event()
    updated.CopyFrom(created[0])
    updated.count = 4
    with SetAside(data / "set-aside" / "db") as store:
        store.put(make_batch("writer:db", "refused then", created))
        store.put(make_batch("writer:db", "refused then", [], [updated]))
    replayed = run_cli("set-aside", "replay", "--writer", "db", "--config", str(config), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {
        "writer": "db", "written": 4, "refused": 0, "left": 0, "error": "", "reasons": {}
    }  # fmt: skip
    assert stored_counts(db) == {created[0].id: 4, created[1].id: 1, created[2].id: 1}
    assert read_batches(data / "set-aside" / "db") == []
