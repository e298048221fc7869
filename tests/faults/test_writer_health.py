"""Health over real gRPC from a real `serve`: a writer stuck past its threshold makes the proxy
NOT_SERVING (queries stay SERVING) until it recovers; a Redis key of the wrong type makes the
Redis writer set the changes it refuses aside, while everything else is stored."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import redis

from protoevents.proxy.writers.redis import RedisOptions, RedisWriter
from protoevents.recorder.setaside import read_batches
from protoevents.v1 import event_pb2, proxy_service_pb2
from tests.support.health import NOT_SERVING, SERVING, status
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.stored import stored_counts
from tests.support.syslog_listener import receive_all


def test_a_stuck_writer_makes_health_not_serving_until_it_recovers(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on, until the test listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = f"sqlite:///{tmp_path}/events.db"
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'db = "{db}"\nwriter_stuck_after_s = 1.0\n'
        '[[writers]]\nname = "db"\nkind = "sql"\n'
        f'[[writers]]\nname = "collector"\nkind = "syslog"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:{port}"\nconnect_timeout_s = 1\n'
    )
    proxy = ServeProcess(tmp_path / "data", "--config", str(config), "--db", db)
    processes.append(proxy)
    assert status(proxy.channel, "") == SERVING
    events = make_events(20)
    result = proxy.stub.RecordBatch(proxy_service_pb2.RecordBatchRequest(events=events), timeout=10)
    assert result.result.accepted_count == 20

    poll(lambda: status(proxy.channel, "") == NOT_SERVING, 30, "the proxy to be NOT_SERVING")
    assert status(proxy.channel, "protoevents.writer.collector") == NOT_SERVING
    assert status(proxy.channel, "protoevents.v1.EventProxyService") == NOT_SERVING
    assert status(proxy.channel, "protoevents.writer.db") == SERVING
    assert status(proxy.channel, "protoevents.v1.EventQueryService") == SERVING
    assert status(proxy.channel, "protoevents.wal") == SERVING
    assert stored_counts(db) == {e.id: 1 for e in events}  # the other writer went on

    with socket.socket() as collector:  # the collector comes up: the writer catches up
        collector.bind(("127.0.0.1", port))
        collector.listen()
        collector.settimeout(60)
        receive_all(collector, events)
        poll(lambda: status(proxy.channel, "") == SERVING, 30, "the proxy to serve again")
        assert status(proxy.channel, "protoevents.writer.collector") == SERVING
    assert proxy.stop(signal.SIGTERM) == 0


def test_a_redis_key_of_the_wrong_type_sets_those_changes_aside_and_the_rest_goes_on(
    tmp_path: Path, processes: list[ServeProcess], redis_url: str, redis_prefix: str
) -> None:
    poisoned = event_pb2.EventSource(node="node-9", component="poisoned")
    key = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix)).stream_key(
        event_pb2.Event(source=poisoned)
    )
    client = redis.Redis.from_url(redis_url)
    client.set(key, "not a stream")
    db = f"sqlite:///{tmp_path}/events.db"
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'db = "{db}"\nwriter_max_attempts = 2\n'
        '[[writers]]\nname = "db"\nkind = "sql"\n'
        f'[[writers]]\nname = "recent"\nkind = "redis"\nurl = "{redis_url}"\n'
        f'key_prefix = "{redis_prefix}"\npublish = false\n'
    )
    proxy = ServeProcess(tmp_path / "data", "--config", str(config), "--db", db)
    processes.append(proxy)
    good = make_events(30)
    bad = make_events(3, source=poisoned)
    for batch in (good[:10], bad, good[10:]):
        request = proxy_service_pb2.RecordBatchRequest(events=batch)
        assert proxy.stub.RecordBatch(request, timeout=10).result.accepted_count == len(batch)

    store = tmp_path / "data" / "set-aside" / "recent"
    poll(lambda: sum(len(b.events) for b in read_batches(store)) == 3, 60, "3 set aside")
    batches = read_batches(store)
    assert sorted(e.id for b in batches for e in b.events) == sorted(e.id for e in bad)
    assert all(b.stage == "writer:recent" and "WRONGTYPE" in b.reason for b in batches)
    good_key = RedisWriter(RedisOptions(url=redis_url, key_prefix=redis_prefix)).stream_key(good[0])
    poll(lambda: client.xlen(good_key) == 30, 30, "the good events in Redis")
    poll(lambda: len(stored_counts(db)) == 33, 30, "every event in the database")
    assert stored_counts(db) == {e.id: 1 for e in good + bad}
    assert status(proxy.channel, "") == SERVING
    assert proxy.stop(signal.SIGTERM) == 0
    client.close()
