"""A proxy served from a background thread, for synchronous clients that attack it, and the
checks that it still serves and that nothing bad reached its SQL writer."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine

from protoevents.proxy.app import DedupFactory, Proxy, default_dedup, start_proxy
from protoevents.proxy.config import Settings
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_events, proxy_settings
from tests.support.services import postgres_url

T = TypeVar("T")


class LiveProxy:
    """`start_proxy(settings)` on an event loop of its own thread; `stub` talks to it."""

    def __init__(
        self,
        settings: Settings,
        dedup: DedupFactory | None = default_dedup,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy: Proxy = self.run(start_proxy(settings, dedup=dedup, credentials=credentials))
        self.address = self.proxy.address
        self.channel = grpc.insecure_channel(self.address)
        self.stub = proxy_service_pb2_grpc.EventProxyServiceStub(self.channel)
        self.engine = sa.create_engine(settings.db, poolclass=sa.NullPool)
        self.good_ids: list[str] = []

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the proxy's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.channel.close()
        self.run(self.proxy.stop(grace=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.engine.dispose()

    def stored(self, ids: list[str]) -> dict[str, int]:
        """Stored count of each of `ids` that is in the database."""
        query = sa.text("SELECT id, count FROM events WHERE id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query, {"ids": ids}).all()
        return {str(row[0]): int(row[1]) for row in rows}

    def writer_state(self) -> tuple[int, int, int]:
        """(SQL writer's bookmark, end of the log, failed writes of the SQL writer)."""

        async def read() -> tuple[int, int, int]:
            feed = self.proxy.dispatcher.feed("sql")
            return feed.bookmark, self.proxy.wal.end, feed.failures

        return self.run(read())

    def assert_still_serving(self, timeout: float = 30) -> None:
        """Health is SERVING, a good batch is accepted, and it reaches the database while
        the SQL writer, never failing, catches up with the log."""
        health = health_pb2_grpc.HealthStub(self.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        batch = make_events(3)
        request = proxy_service_pb2.RecordBatchRequest(events=batch)
        assert self.stub.RecordBatch(request, timeout=10).result.accepted_count == 3
        ids = [event.id for event in batch]
        self.good_ids += ids
        deadline = time.monotonic() + timeout
        while True:
            bookmark, end, failures = self.writer_state()
            assert failures == 0, "the SQL writer failed a batch"
            if bookmark == end and self.stored(ids) == dict.fromkeys(ids, 1):
                return
            assert time.monotonic() < deadline, "the SQL writer did not catch up"
            time.sleep(0.01)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def serve_live(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    dedup: DedupFactory | None = default_dedup,
    **changes: Any,
) -> Iterator[LiveProxy]:
    """The body of a module fixture parametrized with BACKENDS: a LiveProxy on a fresh
    database of `request.param` (dropped afterwards), settings changed by `changes`."""
    folder = tmp_path_factory.mktemp("live-proxy")
    url = f"sqlite:///{folder}/events.db"
    admin: Engine | None = None
    name = f"protoevents_live_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        admin = request.getfixturevalue("postgres_admin")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.make_url(postgres_url()).set(database=name).render_as_string(False)
    settings = proxy_settings(folder / "data", db=url, writer_batch_interval_ms=10, **changes)
    proxy = LiveProxy(settings, dedup)
    yield proxy
    proxy.stop()
    if admin is not None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
