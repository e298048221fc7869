"""The proxy assembled: write-ahead log, ingest, dispatcher and the grpc.aio server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from sqlalchemy.engine import Engine

from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.interceptor import AccessInterceptor
from protoevents.proxy.access.reloading import AccessFile
from protoevents.proxy.admission import Admission
from protoevents.proxy.backlog import Backlog
from protoevents.proxy.changes import Writer, has_trait
from protoevents.proxy.config import Settings
from protoevents.proxy.db.setup import open_database
from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.forward_service import SERVICE as FORWARD_SERVICE
from protoevents.proxy.forward_service import EventForwardServicer, add_forward_service
from protoevents.proxy.forwarded import ForwardedChanges
from protoevents.proxy.health import HealthBoard, HealthReporter, ListingHealthServicer
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.metrics_server import MetricsServer
from protoevents.proxy.ownership import address_error
from protoevents.proxy.proxy_service import EventProxyServicer, add_proxy_service
from protoevents.proxy.quarantine import Quarantine
from protoevents.proxy.query.limits import QueryLimits
from protoevents.proxy.query.page_token import PageTokens
from protoevents.proxy.query.service import (
    ChangeSource,
    EventQueryServicer,
    LocalChanges,
    add_query_service,
)
from protoevents.proxy.query.store import EventStore
from protoevents.proxy.reflection import documented_files
from protoevents.proxy.reflection import enable as enable_reflection
from protoevents.proxy.tls import DAY_S, CertificateReloader, ServerTLS
from protoevents.proxy.validation import Limits, Validator
from protoevents.proxy.wal import WriteAheadLog
from protoevents.proxy.watch.hub import ChangeHub
from protoevents.proxy.watch.redis_bus import RedisRelay
from protoevents.proxy.writers.base import BuildContext
from protoevents.proxy.writers.build import build_writers
from protoevents.proxy.writers.settings import effective_writers
from protoevents.proxy.writers.watch import HubWriter, RedisWatchWriter
from protoevents.recorder.backoff import Backoff
from protoevents.recorder.registry import Registry
from protoevents.v1 import proxy_service_pb2, query_service_pb2

log = logging.getLogger(__name__)

WriterFactory = Callable[[Settings, Engine | None], Sequence[Writer]]
DedupFactory = Callable[[Settings], Deduplicator]

PROXY_SERVICE = proxy_service_pb2.DESCRIPTOR.services_by_name["EventProxyService"].full_name
QUERY_SERVICE = query_service_pb2.DESCRIPTOR.services_by_name["EventQueryService"].full_name
# Folder of the data directory holding each writer's set-aside store.
SET_ASIDE_DIR = "set-aside"


def default_writers(settings: Settings, engine: Engine | None) -> list[Writer]:
    """The writers the settings ask for: the `[[writers]]` of the config file (SQL alone when
    there are none), plus JSON lines when given `jsonl_path`."""
    configs = effective_writers(settings.writers, settings.jsonl_path)
    return build_writers(configs, BuildContext(engine, relay_key=settings.relay_key()))


def needs_database(settings: Settings, writers: WriterFactory) -> bool:
    """Whether the proxy opens its database: unless its configured writers store nothing
    (a relay, forwarding only), or always with writers of the caller's own."""
    if writers is not default_writers:
        return True
    configs = effective_writers(settings.writers, settings.jsonl_path)
    return any(config.options.uses_database for config in configs)


def watch_publishers(settings: Settings, hub: ChangeHub) -> list[Writer]:
    """The writers that hand stored changes to watchers: to this proxy's hub, or to Redis
    (whose relay feeds the hub of every proxy subscribed) when `redis_url` is set."""
    if settings.redis_url is not None:
        key = settings.required_relay_key()
        return [RedisWatchWriter(settings.redis_url, key, settings.redis_channel)]
    return [HubWriter(hub)]


def storing_writer(writers: Sequence[Writer]) -> str | None:
    """The name of the first writer that stores, one without a filter first: watchers are
    handed a change only after it has stored it, so whatever a watcher sees, GetEvent finds."""
    storing = [w for w in writers if has_trait(w, "stores")]
    whole = [w for w in storing if not has_trait(w, "filtered")]
    return (whole or storing)[0].name if storing else None


def default_dedup(settings: Settings) -> Deduplicator:
    """Repeats within `dedup_window_s` of their first occurrence merge into one event."""
    return Deduplicator(
        window=settings.dedup_window_s,
        max_entries=settings.dedup_max_entries,
        max_bytes=settings.dedup_max_bytes,
    )


def grpc_server(
    settings: Settings,
    query_threads: ThreadPoolExecutor,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """The gRPC server, without services: message limits, and a port of its own."""
    limit = settings.max_message_bytes
    return grpc.aio.server(
        interceptors=interceptors,
        # Runs the query service's plain-function RPCs, off the event loop.
        migration_thread_pool=query_threads,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # One proxy per address: a second one must fail to bind, not share the port.
            ("grpc.so_reuseport", 0),
        ],
        # No cap on all RPCs: ingest calls are admitted by their own limits (admission.py),
        # queries by theirs (query/limits.py), so health is never refused for either.
    )


def server_credentials(reloader: CertificateReloader | None) -> grpc.ServerCredentials | None:
    """The credentials the port is served with: the certificates' (None: plaintext)."""
    return reloader.credentials() if reloader is not None else None


def bind(
    server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Listen on `listen` (over TLS with `credentials`); the port bound. Raises
    AddressInUseError naming the holder."""
    try:
        if credentials is not None:
            return server.add_secure_port(listen, credentials)
        return server.add_insecure_port(listen)
    except RuntimeError:  # grpc's "Failed to bind to address"
        raise address_error(listen) from None


async def listen(
    server: grpc.aio.Server, settings: Settings, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind the gRPC port (over TLS with `credentials`) and the Unix socket, and start
    serving; the port bound."""
    port = bind(server, settings.listen, credentials)
    if settings.listen_unix is not None:
        bind_unix(server, settings.listen_unix)
    await server.start()
    return port


def bind_unix(server: grpc.aio.Server, path: Path) -> None:
    """Also listen on the Unix socket `path` (plaintext: only this machine reaches it)."""
    try:
        server.add_insecure_port(f"unix:{path}")
    except RuntimeError:
        raise OSError(f"cannot listen on the Unix socket {path}") from None


def certificate_reloader(settings: Settings, metrics: Metrics) -> CertificateReloader | None:
    """The proxy's certificates when TLS is on, their expiry in `metrics`. Raises
    TLSConfigError naming the file that cannot serve."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    reloader = CertificateReloader(
        ServerTLS(
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_client_ca_file,
            settings.tls_expiry_warning_days * DAY_S,
        )
    )
    gauge = metrics.tls_certificate_expiry.labels(str(settings.tls_cert_file))
    gauge.set_function(reloader.seconds_left)
    return reloader


async def watch_expiry(reloader: CertificateReloader, every_s: float = 3600.0) -> None:
    """Check the certificate's expiry every `every_s` (new connections check it too)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(reloader.check_expiry)


@dataclass
class Proxy:
    """A running proxy. `stop` drains it; `run_proxy` does that on exit."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    wal: WriteAheadLog
    ingest: Ingest
    dispatcher: Dispatcher
    health: health.aio.HealthServicer
    metrics: Metrics
    engine: Engine | None  # None: a relay, which stores nothing
    hub: ChangeHub
    query_threads: ThreadPoolExecutor
    relay: RedisRelay | None = None
    metrics_server: MetricsServer | None = None
    reporter: HealthReporter | None = None
    board: HealthBoard = field(default_factory=HealthBoard)
    access: AccessFile | None = None
    denials: Denials | None = None
    tls: CertificateReloader | None = None
    expiry_watch: asyncio.Task[None] | None = None
    stopped: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # ends forward streams

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> bool:
        """NOT_SERVING, let streams finish for `grace` seconds, write everything to the
        writers, close the log. Returns whether every writer caught up."""
        if self.stopped:
            return True
        self.stopped = True
        grace = self.settings.shutdown_grace_s if grace is None else grace
        if self.reporter is not None:
            await self.reporter.stop()
        if self.expiry_watch is not None:
            self.expiry_watch.cancel()
        await self.health.enter_graceful_shutdown()
        self.stopping.set()
        await self.server.stop(grace)
        if self.relay is not None:
            await self.relay.stop()
        self.query_threads.shutdown(wait=False, cancel_futures=True)
        await self.wal.barrier()
        caught_up = await self.dispatcher.stop(timeout=grace)
        await self.wal.close()
        await self.ingest.close()
        if self.engine is not None:
            self.engine.dispose()
        if self.metrics_server is not None:  # last: scrapes see the drain
            await self.metrics_server.stop()
        log.info("proxy stopped%s", "" if caught_up else " with writers behind in the log")
        return caught_up


def validation_limits(settings: Settings) -> Limits:
    """What ingest accepts of one batch and one event, from the settings."""
    return Limits(
        max_batch_events=settings.max_batch_events,
        max_message_bytes=settings.max_event_message_bytes,
        max_attributes=settings.max_attributes,
        max_attribute_bytes=settings.max_attribute_bytes,
        max_data_bytes=settings.max_data_bytes,
        max_field_bytes=settings.max_field_bytes,
        max_future_s=settings.max_future_s,
    )


async def open_ingest(
    settings: Settings,
    registry: Registry,
    wal: WriteAheadLog,
    metrics: Metrics,
    dedup: DedupFactory | None,
    backlog: Backlog | None = None,
) -> tuple[Ingest, int]:
    """Ingest into `wal` with its quarantine: recent ids (and `backlog`) restored from the
    log, then the quarantined events whose type is now known stored. Returns it and the ids
    restored."""
    quarantine = await Quarantine.open(
        settings.data_dir / "quarantine", max_bytes=settings.quarantine_max_bytes, metrics=metrics
    )
    async with AsyncExitStack() as undo:
        undo.push_async_callback(quarantine.close)
        ingest = Ingest(
            wal,
            Validator(registry, validation_limits(settings)),
            dedup(settings) if dedup is not None else None,
            id_cache_size=settings.idempotency_cache_size,
            metrics=metrics,
            quarantine=quarantine,
            backlog=backlog,
        )
        restored = await ingest.restore()
        await ingest.release_quarantined(ForwardedChanges(ingest).apply)
        undo.pop_all()
    return ingest, restored


async def open_log(settings: Settings, metrics: Metrics) -> WriteAheadLog:
    """The write-ahead log in the data directory, its fsyncs counted."""
    wal = await WriteAheadLog.open(
        settings.data_dir / "wal",
        segment_bytes=settings.wal_segment_bytes,
        max_bytes=settings.wal_max_bytes,
        fsync=settings.fsync,
        fsync_interval_s=settings.fsync_interval_s,
    )
    wal.on_fsync = metrics.wal_fsyncs.inc
    return wal


def make_dispatcher(
    settings: Settings,
    wal: WriteAheadLog,
    chosen: Sequence[Writer],
    hub: ChangeHub,
    metrics: Metrics,
    backlog: Backlog | None = None,
) -> Dispatcher:
    """The feeds of the chosen writers and of the watch publishers; writers that follow the
    store follow the writer that stores (a watcher sees a change once it can be queried)."""
    writers = [*chosen, *watch_publishers(settings, hub)]
    stored_by = storing_writer(writers)
    followers = [w.name for w in writers if has_trait(w, "follows_store") and w.name != stored_by]
    return Dispatcher(
        wal,
        writers,
        batch_events=settings.writer_batch_events,
        batch_interval_s=settings.writer_batch_interval_s,
        metrics=metrics,
        follows=dict.fromkeys(followers, stored_by) if stored_by else None,
        live_only=[w.name for w in writers if has_trait(w, "live_only")],
        max_attempts=settings.writer_max_attempts,
        backoff=Backoff(initial=0.1, maximum=settings.writer_retry_max_s),
        set_aside_dir=settings.data_dir / SET_ASIDE_DIR,
        backlog=backlog,
    )


def start_relay(
    settings: Settings, hub: ChangeHub, metrics: Metrics, undo: AsyncExitStack
) -> tuple[RedisRelay | None, ChangeSource]:
    """Where watchers get changes: this proxy's hub, or every proxy's through Redis (the
    messages signed with the relay's key; the relay's stop pushed on `undo`)."""
    if settings.redis_url is None:
        return None, LocalChanges(hub)
    key = settings.required_relay_key()
    relay = RedisRelay(settings.redis_url, hub, key, settings.redis_channel, metrics=metrics)
    relay.start()
    undo.push_async_callback(relay.stop)
    return relay, relay


def start_metrics_server(
    settings: Settings, metrics: Metrics, board: HealthBoard, undo: AsyncExitStack
) -> MetricsServer | None:
    """`/metrics` and `/healthz` over HTTP on `metrics_listen`, when it is set (its stop
    pushed on `undo`)."""
    if settings.metrics_listen is None:
        return None
    server = MetricsServer(settings.metrics_listen, metrics.registry, lambda: board.report)
    server.start()
    undo.push_async_callback(server.stop)
    return server


async def add_services(
    server: grpc.aio.Server,
    settings: Settings,
    registry: Registry,
    ingest: Ingest,
    store: EventStore | None,
    changes: ChangeSource,
    metrics: Metrics,
    denials: Denials | None = None,
    stopping: asyncio.Event | None = None,
) -> health.aio.HealthServicer:
    """Ingest, forwarding, query, health and reflection on `server`; returns the health
    servicer. Forward streams end once `stopping` is set."""
    add_proxy_service(
        EventProxyServicer(
            ingest,
            settings.max_inflight_batches,
            admission=Admission(settings.max_ingest_streams, settings.max_streams_per_client),
            idle_stream_timeout_s=settings.idle_stream_timeout_s,
            metrics=metrics,
            denials=denials,
        ),
        server,
    )
    query = EventQueryServicer(
        store,
        registry,
        PageTokens(settings.page_token_secret),
        changes,
        max_watchers=settings.max_watchers,
    )
    add_query_service(query, server)
    forward = EventForwardServicer(
        ForwardedChanges(ingest), settings.max_inflight_batches, denials, stopping
    )
    add_forward_service(forward, server)
    health_servicer = ListingHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [PROXY_SERVICE, QUERY_SERVICE, FORWARD_SERVICE, health.SERVICE_NAME]
    enable_reflection(server, services, await asyncio.to_thread(documented_files))
    return health_servicer


def access_control(
    access: AccessFile | None, settings: Settings, metrics: Metrics
) -> tuple[Denials, list[grpc.aio.ServerInterceptor]]:
    """The denials' counter and log, and the interceptor holding calls to the access file
    (none without one: every call allowed)."""
    denials = Denials(metrics, settings.denial_log_interval_s)
    if access is None:
        return denials, []
    access.on_failure = metrics.access_reload_failures.inc
    return denials, [AccessInterceptor(access, denials)]


def query_limits(settings: Settings, metrics: Metrics) -> QueryLimits:
    return QueryLimits(
        settings.query_timeout_s,
        settings.query_scan_slots,
        # Scans running or waiting hold threads: half of them stay for indexed queries.
        max(settings.query_scan_slots, settings.query_threads // 2),
        on_timeout=metrics.query_timeouts.inc,
        on_refused=metrics.queries_refused.inc,
    )


def _checked_before_opening(
    settings: Settings, metrics: Metrics
) -> tuple[AccessFile | None, CertificateReloader | None]:
    """What must hold before anything opens: the relay's key (with Redis), the access file
    and the certificate files, read."""
    if settings.redis_url is not None:
        settings.required_relay_key()
    access = AccessFile.open(settings.access_file) if settings.access_file else None
    return access, certificate_reloader(settings, metrics)


async def start_proxy(
    settings: Settings,
    *,
    registry: Registry | None = None,
    writers: WriterFactory = default_writers,
    dedup: DedupFactory | None = default_dedup,
    credentials: grpc.ServerCredentials | None = None,
) -> Proxy:
    """Read the access file, prepare the database, open the log, restore the id cache,
    start the writers' feeds and serve gRPC (over TLS with `credentials`). Raises
    AccessFileError for a bad access file, DatabaseUnavailableError or DatabaseRevisionError
    when the database cannot be used, SettingsError when the relay has no key. Whatever a
    failed step leaves open is closed, last first."""
    registry = registry or Registry.builtin()
    metrics = Metrics()
    access, reloader = _checked_before_opening(settings, metrics)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    board = HealthBoard()
    stopping = asyncio.Event()
    async with AsyncExitStack() as undo:
        engine = None
        if needs_database(settings, writers):
            engine = await asyncio.to_thread(open_database, settings.db, registry)
            undo.callback(engine.dispose)
        wal = await open_log(settings, metrics)
        undo.push_async_callback(wal.close)
        hub = ChangeHub(settings.watch_queue_size)
        metrics.watchers.set_function(hub.__len__)
        backlog = Backlog()  # ingest fills it, the dispatcher's metrics read it
        chosen = list(writers(settings, engine))
        dispatcher = make_dispatcher(settings, wal, chosen, hub, metrics, backlog)
        # After the dispatcher: its feeds' bookmarks say which records the backlog keeps.
        ingest, restored = await open_ingest(settings, registry, wal, metrics, dedup, backlog)
        undo.push_async_callback(ingest.close)
        dispatcher.start()
        undo.push_async_callback(dispatcher.stop, 0)
        relay, changes = start_relay(settings, hub, metrics, undo)
        query_threads = ThreadPoolExecutor(settings.query_threads, thread_name_prefix="query")
        undo.callback(query_threads.shutdown, wait=False, cancel_futures=True)
        denials, interceptors = access_control(access, settings, metrics)
        server = grpc_server(settings, query_threads, interceptors)
        store = EventStore(engine, query_limits(settings, metrics)) if engine else None
        services = (registry, ingest, store, changes, metrics, denials, stopping)
        health_servicer = await add_services(server, settings, *services)
        metrics_server = start_metrics_server(settings, metrics, board, undo)
        port = await listen(server, settings, credentials or server_credentials(reloader))
        undo.pop_all()  # the proxy owns all of it now: `Proxy.stop` closes it
    proxy = Proxy(
        settings,
        server,
        port,
        wal,
        ingest,
        dispatcher,
        health_servicer,
        metrics,
        engine,
        hub,
        query_threads,
        relay,
        metrics_server,
        board=board,
        access=access,
        denials=denials,
        tls=reloader,
        expiry_watch=asyncio.create_task(watch_expiry(reloader)) if reloader else None,
        stopping=stopping,
    )
    await _report_health(proxy)
    _log_start(proxy, restored)
    return proxy


def _log_start(proxy: Proxy, restored: int) -> None:
    settings, metrics_server = proxy.settings, proxy.metrics_server
    log.info(
        "serving on %s%s%s%s (log %s, %d bytes retained, %d recent ids restored, writers: %s)",
        proxy.address,
        _transport(settings),
        f" and unix:{settings.listen_unix}" if settings.listen_unix else "",
        f", metrics on http://{metrics_server.address}/metrics" if metrics_server else "",
        proxy.wal.directory,
        proxy.wal.size,
        restored,
        ", ".join(f.name for f in proxy.dispatcher.feeds) or "none",
    )


def _transport(settings: Settings) -> str:
    if settings.tls_client_ca_file is not None:
        return " with TLS, client certificates required (mTLS)"
    return " with TLS" if settings.tls_on else " in plaintext"


async def _report_health(proxy: Proxy) -> None:
    """Set every health status now, and keep them true from then on (protoevents.proxy.health)."""
    reporter = HealthReporter(
        proxy.health,
        proxy.wal,
        proxy.dispatcher,
        ingest_services=[PROXY_SERVICE],
        other_services=[QUERY_SERVICE, health.SERVICE_NAME],
        stuck_after_s=proxy.settings.writer_stuck_after_s,
        clock=proxy.dispatcher.clock,
        metrics=proxy.metrics,
        board=proxy.board,
    )
    statuses, _ = reporter.statuses()
    for name, status in statuses.items():  # before `start_proxy` returns: no window
        await proxy.health.set(name, status)
    reporter.publish(statuses)
    reporter.start()
    proxy.reporter = reporter


@asynccontextmanager
async def run_proxy(
    settings: Settings,
    *,
    registry: Registry | None = None,
    writers: WriterFactory = default_writers,
    dedup: DedupFactory | None = default_dedup,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[Proxy]:
    """The proxy, running for the duration of the block (listen on port 0 in tests)."""
    proxy = await start_proxy(
        settings, registry=registry, writers=writers, dedup=dedup, credentials=credentials
    )
    try:
        yield proxy
    finally:
        await asyncio.shield(proxy.stop())
