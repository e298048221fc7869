"""The scenarios of `python -m bench`, each built on a benchmark module runnable alone."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import (
    bench_dedup_memory,
    bench_forward,
    bench_ingest,
    bench_pipeline,
    bench_recorder,
    bench_scaling,
    bench_soak,
    bench_tls,
)
from bench.bench_sql_writer import bench_observe, bench_storm, empty, postgres_database
from bench.peers import otel, syslog
from bench.peers.sink import counting_sink
from bench.suite import Context, Row, Scenario, Target, rate_row, times
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.dedup import DEFAULT_MAX_BYTES

RECORD_COST = Target(5.0, at_least=False, unit="µs", text="<= 5 µs")
INTO_POSTGRES = Target(100_000, at_least=True, unit="events/s", text=">= 100,000 events/s")
INTO_SQLITE = Target(30_000, at_least=True, unit="events/s", text=">= 30,000 events/s")
STORM = Target(400_000, at_least=True, unit="events/s", text=">= 400,000 events/s")
RSS_GROWTH = Target(50.0, at_least=False, unit="MiB", text="< 50 MiB")
DEDUP_HELD = Target(
    DEFAULT_MAX_BYTES / 2**20,
    at_least=False,
    unit="MiB",
    text=f"<= {DEFAULT_MAX_BYTES / 2**20:.0f} MiB (dedup_max_bytes)",
)


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A fresh migrated SQLite database, removed afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/events.db"
        migrate.upgrade(url)
        yield url


@contextmanager
def fresh_postgres(context: Context) -> Iterator[str]:
    """A fresh migrated PostgreSQL database on the benchmark server, dropped afterwards."""
    with postgres_database(context.require_postgres()) as url:
        migrate.upgrade(url)
        yield url


def record_cost(context: Context) -> list[Row]:
    chunks = context.size(50, 200)
    with bench_recorder.counting_proxy() as address:
        costs = bench_recorder.record_costs(address, context.runs, chunks, context.status)
    record, logging_ns = statistics.median(costs["record"]), statistics.median(costs["logging"])
    rows = [
        Row(
            "`Recorder.record()` on the caller's thread",
            record / 1000,
            "µs",
            f"{record / 1000:.2f} µs",
            f"{times(record, logging_ns)} of `logging.info`",
            RECORD_COST,
            [ns / 1000 for ns in costs["record"]],
        ),
        Row(
            "peer: `logging.info` to a NullHandler",
            logging_ns / 1000,
            "µs",
            f"{logging_ns / 1000:.2f} µs",
            "1x",
            samples=[ns / 1000 for ns in costs["logging"]],
        ),
    ]
    if not costs["otel"]:
        rows.append(Row(f"peer: OpenTelemetry SDK {otel.MISSING}", 0.0, "", "skipped"))
    else:
        emit = statistics.median(costs["otel"])
        rows.append(
            Row(
                "peer: OpenTelemetry `Logger.emit` (BatchLogRecordProcessor)",
                emit / 1000,
                "µs",
                f"{emit / 1000:.2f} µs",
                f"{times(emit, logging_ns)} of `logging.info`",
                samples=[ns / 1000 for ns in costs["otel"]],
            )
        )
    return rows


def delivered_row(measure: str, emitted: int, delivered: list[int], rates: list[float]) -> Row:
    row = rate_row(measure, rates)
    median = statistics.median(delivered)
    row.shown += f", delivered {median:,.0f} of {emitted:,} ({median / emitted:.0%})"
    row.detail = {"emitted": emitted, "delivered": delivered}
    return row


def delivery(context: Context) -> list[Row]:
    """One client sends `events` as fast as it can to a far end that only counts."""
    events = context.size(10_000, 200_000)
    big_queue = events  # enlarged: room for every record of a run
    ours: list[float] = []
    peers: dict[str, tuple[list[int], list[float]]] = {}

    def peer(name: str, delivered: int, seconds: float) -> None:
        counts, rates = peers.setdefault(name, ([], []))
        counts.append(delivered)
        rates.append(delivered / seconds if seconds > 0 else 0.0)

    with (
        bench_recorder.counting_proxy() as address,
        counting_sink(syslog.udp_sink) as (syslog_port, syslog_count),
        counting_sink(otel.otlp_sink) if otel.available() else _none() as otlp,
    ):
        for run in range(context.runs):
            status = f"run {run + 1}/{context.runs}"
            context.status(f"{status}: recorder")
            ours += bench_recorder.delivery_rates(address, events, 1)[0]
            if otlp is not None:
                port, counter = otlp
                for name, queue in (("default", None), ("enlarged", big_queue)):
                    context.status(f"{status}: OpenTelemetry, {name} queue")
                    before = counter.value
                    seconds = otel.emit_all(port, events, queue)
                    peer(f"otel {name}", counter.value - before, seconds)
            context.status(f"{status}: syslog")
            before = syslog_count.value
            seconds = syslog.log_all(syslog_port, syslog_count, events)
            peer("syslog", syslog_count.value - before, seconds)
    rows = [
        delivered_row(
            f"recorder -> counting proxy, {events:,} events, acknowledged",
            events,
            [events] * len(ours),
            ours,
        )
    ]
    labels = {
        "otel default": "peer: OpenTelemetry SDK -> OTLP gRPC sink, default queue (2,048)",
        "otel enlarged": f"peer: OpenTelemetry SDK -> OTLP gRPC sink, queue of {big_queue:,}",
        "syslog": "peer: `logging` SysLogHandler -> UDP syslog listener",
    }
    ours_median = statistics.median(ours)
    for name, (counts, rates) in peers.items():
        row = delivered_row(labels[name], events, counts, rates)
        row.ratio = f"protoevents {times(ours_median, row.value)} this"
        rows.append(row)
    if not otel.available():
        rows.append(Row(f"peer: OpenTelemetry SDK {otel.MISSING}", 0.0, "", "skipped"))
    return rows


@contextmanager
def _none() -> Iterator[None]:
    yield None


def end_to_end(backend: str) -> Callable[[Context], list[Row]]:
    target = INTO_POSTGRES if backend == "PostgreSQL" else INTO_SQLITE

    def scenario(context: Context) -> list[Row]:
        database = fresh_postgres(context) if backend == "PostgreSQL" else sqlite_database()
        events = context.size(10_000, 100_000)
        with database as url:
            result = bench_pipeline.run_backend(
                url,
                events=events,
                runs=context.runs,
                latency_samples=context.size(8, 50),
                naive_events=context.size(100, 2_000),
                unary_events=context.size(200, 2_000),
                status=context.status,
            )
        ours = statistics.median(result.rates)
        naive, unary = statistics.median(result.naive), statistics.median(result.unary)
        q = statistics.quantiles(result.latencies_ms, n=100)
        recorder_us, proxy_us, database_us = result.cpu_medians()
        total_us = recorder_us + proxy_us + database_us
        bound = 2e6 / total_us
        return [
            rate_row(
                f"recorder -> `serve` -> committed, {events:,} events",
                result.rates,
                f"{times(ours, naive)} naive, {times(ours, unary)} unary",
                target,
            ),
            rate_row(
                "peer: naive ORM insert + commit per event",
                result.naive,
                f"protoevents {times(ours, naive)} this",
            ),
            rate_row(
                "peer: one unary RecordBatch call per event, same `serve`",
                result.unary,
                f"protoevents {times(ours, unary)} this",
            ),
            Row(
                "record-to-committed latency p50 / p99",
                q[49],
                "ms",
                f"{q[49]:.0f} / {q[98]:.0f} ms",
                samples=result.latencies_ms,
                detail={"p99_ms": q[98]},
            ),
            Row(
                "CPU per event: recorder / proxy / database",
                total_us,
                "µs",
                f"{recorder_us:.1f} / {proxy_us:.1f} / {database_us:.1f} µs",
                detail={"samples_us": result.cpu_us},
            ),
            Row(
                "what 2 cores allow at that CPU cost",
                bound,
                "events/s",
                f"{bound:,.0f} events/s",
                target=target,
            ),
        ]

    return scenario


def storm(context: Context) -> list[Row]:
    count = context.size(100_000, 1_000_000)
    batch = 1000
    single: list[float] = []
    many: list[float] = []
    writers: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
    proxy: list[float] = []
    with sqlite_database() as sqlite_url, _maybe_postgres(context) as postgres_url:
        engines = {"SQLite": create_engine(sqlite_url)}
        if postgres_url:
            engines["PostgreSQL"] = create_engine(postgres_url)
        proxy_backend = "PostgreSQL" if postgres_url else "SQLite"
        try:
            for run in range(context.runs):
                status = f"run {run + 1}/{context.runs}"
                context.status(f"{status}: deduplicator alone")
                one, batched = bench_observe(count, batch, time.time_ns())
                single.append(one)
                many.append(batched)
                for name, engine in engines.items():
                    context.status(f"{status}: deduplicator + {name} writer")
                    start_ns = time.time_ns() + (run + 1) * 10**12
                    writers[name].append(bench_storm(engine, count, batch, start_ns))
                context.status(f"{status}: through `serve` into {proxy_backend}")
                url = postgres_url if postgres_url else sqlite_url
                empty(engines[proxy_backend])
                proxy.append(bench_ingest.storm_through_proxy(url, count, batch))
        finally:
            for engine in engines.values():
                engine.dispose()
    per_event = statistics.median(single)
    rows = [
        rate_row(f"peer: `Deduplicator.observe` per event, {count:,} events", single, "1x"),
        rate_row(
            "deduplicator alone (`observe_many`, batches of 1,000)",
            many,
            f"{times(statistics.median(many), per_event)} per-event",
            STORM,
        ),
    ]
    for name, rates in writers.items():
        if rates:
            rows.append(rate_row(f"deduplicator + {name} writer, one row", rates, "", STORM))
    rows.append(
        rate_row(f"end to end: gRPC stream -> `serve` -> {proxy_backend}", proxy, "", STORM)
    )
    for row in rows:
        row.detail["events"] = count
    if not writers["PostgreSQL"]:
        rows.append(Row(f"PostgreSQL writer: {context.postgres_missing}", 0.0, "", "skipped"))
    return rows


@contextmanager
def _maybe_postgres(context: Context) -> Iterator[str | None]:
    if context.postgres is None:
        yield None
        return
    with fresh_postgres(context) as url:
        yield url


def soak(context: Context) -> list[Row]:
    config = (
        bench_soak.SoakConfig(minutes=0.5, rate=5_000, id_cache=10_000, sample_s=2, min_warmup_s=10)
        if context.quick
        else bench_soak.SoakConfig()
    )
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/events.db"
        migrate.upgrade(url)
        result = bench_soak.soak(url, config, Path(folder), context.status)
    growth = float(result["growth_after_warmup_mib"])  # type: ignore[arg-type]
    warmup = result["warmup_s"]
    return [
        Row(
            f"`serve` RSS growth after warm-up ({warmup} s) over {config.minutes:g} min",
            growth,
            "MiB",
            f"{growth:.1f} MiB ({result['rss_after_warmup_mib']} -> {result['rss_end_mib']} MiB)",
            target=RSS_GROWTH,
            detail=result,
        ),
    ]


def dedup_memory(context: Context) -> list[Row]:
    """Memory the deduplicator holds (tracemalloc: deterministic, so measured once)."""
    data = 60_000
    storm_events = context.size(5_000, 10_000)
    context.status(f"storm of {storm_events:,} distinct large events")
    stormed = bench_dedup_memory.storm(storm_events, data)
    context.status("per key, small events")
    small = bench_dedup_memory.per_key(context.size(5_000, 20_000), 0)
    context.status("per key, large events")
    large = bench_dedup_memory.per_key(context.size(500, 2_000), data)
    rows = [
        Row(
            f"dedup memory per key, {name} events ({row.serialized:,.0f} B serialized)",
            row.traced,
            "B",
            f"{row.traced:,.0f} B",
            f"accounted {row.accounted:,.0f} B",
            detail={"keys": row.keys, "fixed_bytes": row.fixed},
        )
        for name, row in (("small", small), ("large", large))
    ]
    alone = bench_dedup_memory.key_bound_alone(large)
    rows += [
        Row(
            f"dedup memory after {storm_events:,} distinct 60 KB events, default settings",
            stormed.held / 2**20,
            "MiB",
            f"{stormed.held / 2**20:,.1f} MiB, {stormed.keys:,} keys kept",
            f"key bound alone: {alone / 2**30:,.1f} GiB",
            DEDUP_HELD,
            detail={
                "keys": stormed.keys,
                "evictions": stormed.evictions,
                "accounted_bytes": stormed.accounted,
                "traced_peak_bytes": stormed.peak,
                "fixed_bytes": stormed.fixed,
            },
        ),
        Row(
            "resident set growth in that storm: at the peak / at the end",
            stormed.rss_peak / 2**20,
            "MiB",
            f"{stormed.rss_peak / 2**20:,.1f} / {stormed.rss_end / 2**20:,.1f} MiB",
        ),
    ]
    return rows


def recorders(context: Context) -> list[Row]:
    events = context.size(16_000, 100_000)
    rows = []
    base = 0.0
    for count in (1, 4, 16):
        with sqlite_database() as url:
            rates = bench_scaling.by_recorders(url, count, events, context.runs, context.status)
        median = statistics.median(rates)
        base = base or median
        rows.append(
            rate_row(
                f"{count} recorder {'process' if count == 1 else 'processes'} -> `serve` -> SQLite",
                rates,
                f"{times(median, base)} one recorder",
            )
        )
    return rows


def batch_size(context: Context) -> list[Row]:
    events = context.size(10_000, 100_000)
    sizes = (10, 100, 1000, 5000)
    medians: dict[int, list[float]] = {}
    for size in sizes:
        with sqlite_database() as url:
            medians[size] = bench_scaling.by_batch_size(
                url, size, events, context.runs, context.status
            )
    default = statistics.median(medians[1000])
    return [
        rate_row(
            f"`Recorder(batch_size={size})` -> `serve` -> SQLite",
            rates,
            f"{times(statistics.median(rates), default)} of batch_size=1000",
        )
        for size, rates in medians.items()
    ]


def mtls(context: Context) -> list[Row]:
    """Ingest over one Record stream with client certificates required, beside plaintext."""
    events = context.size(50_000, 200_000)
    found = bench_tls.rates(events, 1000, context.runs, context.status)
    plain = statistics.median(found["plaintext"])
    mtls_median = statistics.median(found["mtls"])
    return [
        rate_row(f"ingest, one Record stream, plaintext, {events:,} events", found["plaintext"]),
        rate_row(
            "ingest, one Record stream, mTLS (client certificate required)",
            found["mtls"],
            f"{times(mtls_median, plain)} of plaintext",
        ),
    ]


def forward(context: Context) -> list[Row]:
    """A site `serve` (SQLite) forwarding to a central `serve` (PostgreSQL): throughput beside
    the site's own ingest, catch-up after central was down, lag at a steady rate."""
    events = context.size(5_000, 100_000)
    rates = (2_000,) if context.quick else (10_000, 5_000)
    seconds, warmup = (2.0, 0.5) if context.quick else (20.0, 5.0)
    with fresh_postgres(context) as url:
        found = bench_forward.run(
            url, events=events, runs=context.runs, rates=rates, seconds=seconds, warmup=warmup,
            status=context.status,
        )  # fmt: skip
    median = statistics.median
    site_us, central_us, database_us = (median(s[i] for s in found.cpu_us) for i in range(3))
    catchup = rate_row(
        f"catch-up: central started, {events:,} events waiting at the site, until stored",
        found.catchup_rates,
        f"{median(found.catchup_ratios()):.2f}x site ingest (central down)",
    )
    catchup.detail["central_start_s"] = found.central_start_s
    rows = [
        rate_row(
            f"site ingest: recorder -> site `serve` (SQLite) -> stored, {events:,} events",
            found.site_rates,
            "1x",
        ),
        rate_row(
            "forwarding: the same events, until central (PostgreSQL) stored them",
            found.central_rates,
            f"{median(found.ratios()):.2f}x site ingest",
        ),
        rate_row("site ingest while central is down", found.down_site_rates),
        catchup,
        Row(
            "CPU per event: site / central / central's database",
            site_us + central_us + database_us,
            "µs",
            f"{site_us:.1f} / {central_us:.1f} / {database_us:.1f} µs",
            detail={"samples_us": found.cpu_us},
        ),
    ]
    for runs in found.lags.values():
        rows += lag_rows(runs)
    return rows


def lag_rows(runs: list[bench_forward.LagRun]) -> list[Row]:
    """Lag to central's watch at one steady rate, beside the site's own watch."""
    median = statistics.median
    central = [bench_forward.percentiles(lag.central_ms) for lag in runs]
    site = [bench_forward.percentiles(lag.site_ms) for lag in runs]
    central_p50, central_p99 = median(p[0] for p in central), median(p[1] for p in central)
    site_p50, site_p99 = median(p[0] for p in site), median(p[1] for p in site)
    sent = [lag.rate for lag in runs]
    return [
        Row(
            f"lag at {median(sent):,.0f} events/s: site received -> central's watch, p50 / p99",
            central_p50,
            "ms",
            f"{central_p50:.0f} / {central_p99:.0f} ms",
            f"{times(central_p50, site_p50)} the site's p50",
            samples=[p[0] for p in central],
            detail={"p99_ms": [p[1] for p in central], "rates": sent},
        ),
        Row(
            "same events: site received -> site's own watch (stored there), p50 / p99",
            site_p50,
            "ms",
            f"{site_p50:.0f} / {site_p99:.0f} ms",
            "1x",
            samples=[p[0] for p in site],
            detail={"p99_ms": [p[1] for p in site]},
        ),
    ]


SCENARIOS = [
    Scenario(
        "record_cost", "record() caller cost, peers logging and OpenTelemetry", record_cost, (4, 15)
    ),
    Scenario(
        "delivery", "one client delivering to a counting far end, with peers", delivery, (12, 60)
    ),
    Scenario(
        "e2e_sqlite", "recorder -> serve -> SQLite, with peers", end_to_end("SQLite"), (12, 45)
    ),
    Scenario(
        "e2e_postgres",
        "recorder -> serve -> PostgreSQL, with peers",
        end_to_end("PostgreSQL"),
        (15, 50),
    ),
    Scenario("storm", "dedup storm: identical events -> one row counting them", storm, (15, 150)),
    Scenario("soak", "serve RSS over a long run", soak, (32, 620)),
    Scenario(
        "dedup_memory", "dedup memory per key and in a storm of large events", dedup_memory, (6, 15)
    ),
    Scenario("recorders", "throughput by number of recorder processes", recorders, (10, 120)),
    Scenario("batch_size", "throughput by recorder batch size", batch_size, (10, 90)),
    Scenario("mtls", "ingest over mTLS beside plaintext", mtls, (15, 60)),
    Scenario(
        "forward", "site -> central forwarding: throughput, catch-up, lag", forward, (30, 240)
    ),
]
