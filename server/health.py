"""What grpc.health.v1 says about the proxy, kept true as the log and the writers change.

Service names and what NOT_SERVING means for each:

- `""` and `protoevents.v1.EventProxyService`: the proxy cannot persist (the log is held by a
  write error) or a writer has been failing for longer than `writer_stuck_after_s` (but one
  that rides out an outage of what it feeds: a forward writer, whose changes wait in the log).
- `protoevents.wal`: the write-ahead log cannot write; it retries by itself.
- `protoevents.wal.integrity`: damaged bytes were found in the log and copied to
  `wal/damaged/`; the records around them were kept. It stays NOT_SERVING until an operator
  has looked at and removed those copies (or the proxy restarts with none left).
- `protoevents.writer.NAME`: the writer NAME has been failing for longer than
  `writer_stuck_after_s`, or its feed is being restarted.

The query service and health itself stay SERVING whatever the writers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2

from protoevents.proxy.changes import has_trait
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.wal import Damage, WriteAheadLog

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAL = "protoevents.wal"
WAL_INTEGRITY = "protoevents.wal.integrity"
WRITER_PREFIX = "protoevents.writer."


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The proxy's health in words, for HTTP (`/healthz`): whether `""` is SERVING, every
    service's status by name, and what is wrong (empty when nothing is)."""

    serving: bool
    problems: tuple[str, ...]
    statuses: Mapping[str, str] = field(default_factory=dict)


class HealthBoard:
    """The latest HealthReport, replaced whole at each change: readers on other threads (the
    metrics server's) see one report or the next, never half of one."""

    def __init__(self) -> None:
        self.report = HealthReport(False, ("the proxy is starting",))

    def stopping(self) -> None:
        self.report = HealthReport(False, ("the proxy is stopping",), self.report.statuses)


class ListingHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1.Health with `List` as well: every service's status (grpcio's servicer
    answers only Check and Watch, though reflection advertises List)."""

    def __init__(self) -> None:
        super().__init__()
        self._listed: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {
            "": health_pb2.HealthCheckResponse.SERVING
        }

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        self._listed[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._listed = dict.fromkeys(self._listed, health_pb2.HealthCheckResponse.NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(  # noqa: N802  (the RPC's name)
        self,
        request: health_pb2.HealthListRequest,
        context: grpc.aio.ServicerContext[
            health_pb2.HealthListRequest, health_pb2.HealthListResponse
        ],
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in sorted(self._listed.items())
            }
        )


class HealthReporter:
    """Sets the statuses from the log's and the dispatcher's state each time one changes, and
    once more when a failing writer crosses the `stuck_after_s` threshold."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        wal: WriteAheadLog,
        dispatcher: Dispatcher,
        *,
        ingest_services: Sequence[str],
        other_services: Sequence[str],
        stuck_after_s: float,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
        board: HealthBoard | None = None,
    ) -> None:
        self.servicer = servicer
        self.board = board or HealthBoard()
        self.wal = wal
        self.dispatcher = dispatcher
        self.ingest_services = ("", *ingest_services)
        self.other_services = tuple(other_services)
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self.metrics = metrics
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._shown: dict[str, int] = {}

    def start(self) -> None:
        self.wal.on_state = self.changed
        self.wal.on_damage = self._damaged
        for damage in self.wal.damage:  # found at open, before anyone listened
            self._count(damage)
        self.dispatcher.on_state = self.changed
        self._task = asyncio.create_task(self._run(), name="health")

    def changed(self) -> None:
        """Re-evaluate soon (safe from any thread: damage is found by readers in threads)."""
        with contextlib.suppress(RuntimeError):  # the loop closed at exit
            self._loop.call_soon_threadsafe(self._changed.set)

    def _damaged(self, damage: Damage) -> None:
        self._count(damage)
        self.changed()

    def _count(self, damage: Damage) -> None:
        if self.metrics is not None:
            self.metrics.wal_corrupt_bytes.inc(damage.length)

    def statuses(self) -> tuple[dict[str, int], float | None]:
        """Every service's status now, and in how many seconds a failing writer becomes
        stuck (None when none is about to)."""
        now = self.clock()
        wal_ok = self.wal.unavailable is None
        if self.metrics is not None:
            self.metrics.wal_unavailable.set(0 if wal_ok else 1)
        statuses = {WAL: SERVING if wal_ok else NOT_SERVING}
        statuses[WAL_INTEGRITY] = NOT_SERVING if self.wal.damaged_files() else SERVING
        next_check: float | None = None
        writers_ok = True
        for feed in self.dispatcher.feeds:
            failing = feed.failing_since
            stuck = failing is not None and now - failing >= self.stuck_after_s
            if failing is not None and not stuck:
                wait = failing + self.stuck_after_s - now
                next_check = wait if next_check is None else min(next_check, wait)
            ok = not stuck and not feed.restarting
            writers_ok = writers_ok and (not stuck or has_trait(feed.writer, "rides_out"))
            statuses[WRITER_PREFIX + feed.name] = SERVING if ok else NOT_SERVING
        overall = SERVING if wal_ok and writers_ok else NOT_SERVING
        for name in self.ingest_services:
            statuses[name] = overall
        for name in self.other_services:
            statuses[name] = SERVING
        return statuses, next_check

    def problems(self) -> tuple[str, ...]:
        """What is wrong now, in words, worst first."""
        found: list[str] = []
        if self.wal.unavailable is not None:
            found.append(f"the write-ahead log cannot write: {self.wal.unavailable}")
        now = self.clock()
        for feed in self.dispatcher.feeds:
            if feed.failing_since is not None:
                stuck = now - feed.failing_since >= self.stuck_after_s
                found.append(
                    f"writer {feed.name} has been failing for {now - feed.failing_since:.0f} s"
                    f"{' (stuck)' if stuck else ''}: {feed.last_error or 'no detail'}"
                )
            elif feed.restarting:
                found.append(f"writer {feed.name}'s feed failed and is being started again")
        damaged = self.wal.damaged_files()
        if damaged:
            found.append(
                f"{len(damaged)} copies of damaged log bytes wait in {damaged[0].parent} "
                "(ingest goes on)"
            )
        return tuple(found)

    def publish(self, statuses: Mapping[str, int]) -> None:
        """Put the report of `statuses` on the board."""
        self.board.report = HealthReport(
            statuses[""] == SERVING,
            self.problems(),
            {
                name or "(proxy)": health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                for name, status in sorted(statuses.items())
            },
        )

    async def _run(self) -> None:
        while True:
            statuses, next_check = self.statuses()
            self.publish(statuses)
            for name, status in statuses.items():
                if self._shown.get(name) != status:
                    if name in self._shown or status != SERVING:
                        log.log(
                            logging.INFO if status == SERVING else logging.WARNING,
                            "health: %s is %s",
                            name or "the proxy",
                            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                        )
                    self._shown[name] = status
                    await self.servicer.set(name, status)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if next_check is None else next_check + 0.01):
                    await self._changed.wait()

    async def stop(self) -> None:
        """Stop updating (before the servicer enters its graceful shutdown); the board says
        the proxy is stopping."""
        self.board.stopping()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
