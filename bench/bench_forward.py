"""Forwarding: one recorder -> a site `protoevents serve` (SQLite) whose `forward` writer
streams its log to a central `protoevents serve` (PostgreSQL), all on loopback.

    python -m bench.bench_forward [--events 100000] [--runs 3] [--rates 10000,5000] [--seconds 20]

Each run has three parts, against the same site and central processes (fsync=batch):

- throughput: `--events` distinct events recorded as fast as one recorder does (as in
  `bench.bench_pipeline`), timed until the site has stored them all (site ingest) and until
  central has (forwarding); same events, same load, so the ratio holds the noise out;
- catch-up: central stopped, `--events` recorded and stored at the site, then central
  started: events/s from central listening until it has stored them all;
- lag: each of `--rates` events/s for `--seconds` (the first `--warmup` seconds left out),
  watched by a process holding a WatchEvents stream on central and one on the site: the
  time from an event's `received_time` at the site (its acknowledgement follows its fsync)
  to its arrival at central, beside its arrival on the site's own watch (stored at the
  site) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import sqlalchemy as sa

from bench.bench_pipeline import (
    DEFAULT_POSTGRES,
    ELECTED,
    cpu_seconds,
    database_processes,
    is_stored,
    proxy,
    stored,
)
from bench.bench_sql_writer import postgres_database
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder import Recorder
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc

SITE = "site-1"
# The site retries central at most this long apart: catch-up starts within it of central.
RETRY_MAX_S = 0.1
Status = Callable[[str], None]


@dataclass
class LagRun:
    """One steady run: the rate sent, and each kept event's lag (ms) to either watch."""

    rate: float
    central_ms: list[float]
    site_ms: list[float]


@dataclass
class ForwardResult:
    """Per-run samples of every part, for medians and same-run ratios."""

    site_rates: list[float] = field(default_factory=list)
    central_rates: list[float] = field(default_factory=list)
    down_site_rates: list[float] = field(default_factory=list)
    catchup_rates: list[float] = field(default_factory=list)
    central_start_s: list[float] = field(default_factory=list)
    cpu_us: list[tuple[float, float, float]] = field(default_factory=list)
    lags: dict[int, list[LagRun]] = field(default_factory=dict)  # by rate asked

    def ratios(self) -> list[float]:
        """Forwarding over site ingest, run by run."""
        return [c / s for c, s in zip(self.central_rates, self.site_rates, strict=True)]

    def catchup_ratios(self) -> list[float]:
        """Catch-up over the site's ingest of the same events (central down), run by run."""
        return [c / s for c, s in zip(self.catchup_rates, self.down_site_rates, strict=True)]


def free_port() -> int:
    """A loopback port free now, for a central that must come back on the same address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def site_config(folder: Path, central: str) -> Path:
    """The site's config: its SQL writer, and a forward writer to `central`."""
    path = folder / "site.toml"
    path.write_text(
        f"writer_retry_max_s = {RETRY_MAX_S}\n\n"
        '[[writers]]\nname = "db"\nkind = "sql"\n\n'
        f'[[writers]]\nname = "central"\nkind = "forward"\naddress = "{central}"\n'
        f'site = "{SITE}"\n'
    )
    return path


def wait_both(
    site: sa.Engine, central: sa.Engine, count: int, last_id: str, timeout: float = 300
) -> tuple[float, float]:
    """perf_counter() times at which the site and central stored `last_id` (each stores in
    log order, so all before it too); then checks both hold `count` events."""
    deadline = time.monotonic() + timeout
    done: dict[str, float] = {}
    while len(done) < 2:
        for name, engine in (("site", site), ("central", central)):
            if name not in done and is_stored(engine, last_id):
                done[name] = time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"site {stored(site)}, central {stored(central)} of {count}")
        time.sleep(0.005)
    for name, engine in (("site", site), ("central", central)):
        if (found := stored(engine)) != count:
            raise AssertionError(f"{name} stored {found} events, {count} recorded")
    return done["site"], done["central"]


def wait_stored_at(engine: sa.Engine, count: int, last_id: str, timeout: float = 300) -> float:
    """perf_counter() time at which `engine` stored `last_id`; checks it holds `count`."""
    deadline = time.monotonic() + timeout
    while not is_stored(engine, last_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stored(engine)} of {count} events stored")
        time.sleep(0.005)
    at = time.perf_counter()
    if (found := stored(engine)) != count:
        raise AssertionError(f"{found} events stored, {count} recorded")
    return at


def serve_processes() -> tuple[psutil.Process, psutil.Process]:
    """The site's and central's `serve` processes, children of this one."""
    found = [c for c in psutil.Process().children() if "serve" in " ".join(c.cmdline())]
    site = next(p for p in found if "--config" in p.cmdline())
    central = next(p for p in found if p is not site)
    return site, central


class Bench:
    """A site and a central `serve`; central can be stopped and started on its address."""

    def __init__(self, central_url: str, folder: Path, status: Status) -> None:
        self.central_url = central_url
        self.folder = folder
        self.status = status
        self.central_address = f"127.0.0.1:{free_port()}"
        self.stack = ExitStack()
        self.central_stack: ExitStack | None = None
        self.site_url = f"sqlite:///{folder}/site.db"
        migrate.upgrade(self.site_url)
        self.total = 0

    def start_central(self) -> None:
        assert self.central_stack is None
        stack = ExitStack()
        flags = ["--listen", self.central_address]
        stack.enter_context(proxy(self.central_url, self.folder / "central", flags))
        self.central_stack = stack

    def stop_central(self) -> None:
        assert self.central_stack is not None
        self.central_stack.close()
        self.central_stack = None

    def __enter__(self) -> Bench:
        self.start_central()
        config = site_config(self.folder, self.central_address)
        flags = ["--config", str(config)]
        self.site_address = self.stack.enter_context(
            proxy(self.site_url, self.folder / "site", flags)
        )
        self.site = create_engine(self.site_url)
        self.central = create_engine(self.central_url)
        self.recorder = Recorder(
            component="bench", event_types=[ClusterEventType], proxy=self.site_address,
            spool_dir=self.folder / "spool", queue_size=1_000_000,
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.close(30)
        self.site.dispose()
        self.central.dispose()
        if self.central_stack is not None:
            self.stop_central()
        self.stack.close()

    def record(self, events: int, label: str) -> str:
        """Record `events` distinct events as fast as the recorder takes them; the last id."""
        last = ""
        for i in range(events):
            last = self.recorder.record(ELECTED, f"{label} event {i}")
        self.total += events
        return last

    def throughput(self, events: int, label: str) -> tuple[float, float, tuple[float, ...]]:
        """(site ingest events/s, forwarding events/s, CPU µs per event of site, central
        and central's database) of `events` recorded as fast as one recorder does."""
        processes = (*serve_processes(), database_processes(self.central_url))
        site_p, central_p, database = processes
        before = [cpu_seconds([site_p]), cpu_seconds([central_p]), cpu_seconds(database)]
        start = time.perf_counter()
        last = self.record(events, label)
        at_site, at_central = wait_both(self.site, self.central, self.total, last)
        after = [cpu_seconds([site_p]), cpu_seconds([central_p]), cpu_seconds(database)]
        cpu = tuple((b - a) * 1e6 / events for a, b in zip(before, after, strict=True))
        return events / (at_site - start), events / (at_central - start), cpu

    def catch_up(self, events: int, label: str) -> tuple[float, float, float]:
        """(site ingest events/s while central is down, catch-up events/s from central
        listening again, seconds central took to start)."""
        self.stop_central()
        start = time.perf_counter()
        last = self.record(events, label)
        at_site = wait_stored_at(self.site, self.total, last)
        starting = time.perf_counter()
        self.start_central()
        listening = time.perf_counter()
        at_central = wait_stored_at(self.central, self.total, last)
        return events / (at_site - start), events / (at_central - listening), listening - starting

    def steady(self, rate: int, seconds: float, warmup: float) -> LagRun:
        """`rate` events/s for `seconds`, watched on central and the site."""
        last = self.record(1, "before the watch")
        wait_stored_at(self.central, self.total, last)
        count = int(rate * seconds)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_forward", "--watch", self.central_address,
             self.site_address, str(count)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert watcher.stdout is not None
            if (line := watcher.stdout.readline().strip()) != "ready":
                raise RuntimeError(f"the watcher did not start (printed {line!r})")
            started = time.monotonic()
            sent = 0
            while sent < count:
                due = min(count, int((time.monotonic() - started) * rate))
                while sent < due:
                    self.recorder.record(ELECTED, f"steady {self.total + sent}")
                    sent += 1
                time.sleep(0.001)
            took = time.monotonic() - started
            self.total += count
            out, _ = watcher.communicate(timeout=120)
        finally:
            watcher.kill()
            watcher.wait()
        lags = json.loads(out)
        skip = int(rate * warmup)
        return LagRun(count / took, lags["central"][skip:], lags["site"][skip:])


def run(
    central_url: str,
    *,
    events: int,
    runs: int,
    rates: tuple[int, ...],
    seconds: float,
    warmup: float,
    status: Status = lambda _: None,
) -> ForwardResult:
    """Every part, `runs` times, against one site and one central on `central_url`."""
    result = ForwardResult()
    with tempfile.TemporaryDirectory() as folder, Bench(central_url, Path(folder), status) as b:
        for n in range(runs):
            label = f"run {n + 1}/{runs}"
            status(f"{label}: throughput")
            site_rate, central_rate, cpu = b.throughput(events, f"{label} throughput")
            result.site_rates.append(site_rate)
            result.central_rates.append(central_rate)
            result.cpu_us.append((cpu[0], cpu[1], cpu[2]))
            status(f"{label}: catch-up")
            down, catchup, start_s = b.catch_up(events, f"{label} catch-up")
            result.down_site_rates.append(down)
            result.catchup_rates.append(catchup)
            result.central_start_s.append(start_s)
            for rate in rates:
                status(f"{label}: {rate:,} events/s for {seconds:g} s")
                result.lags.setdefault(rate, []).append(b.steady(rate, seconds, warmup))
    return result


def watch(central: str, site: str, count: int) -> None:
    """Watch both proxies until each has shown `count` new events after the first response;
    print their lags (ms from received_time to arrival here, in order) as JSON."""
    lags: dict[str, list[float]] = {"central": [], "site": []}
    ready = threading.Barrier(3)

    def follow(name: str, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
            request = query_service_pb2.WatchEventsRequest(replay_count=1, batched=True)
            stream = stub.WatchEvents(request)
            first = True
            kept = lags[name]
            for response in stream:
                now = time.time_ns()
                if first:  # the replay: the stream is subscribed
                    first = False
                    ready.wait()
                    continue
                for change in response.changes:
                    if change.kind == query_service_pb2.CHANGE_KIND_CREATED:
                        kept.append((now - change.event.received_time.ToNanoseconds()) / 1e6)
                if len(kept) >= count:
                    stream.cancel()
                    return

    threads = [
        threading.Thread(target=follow, args=(n, a), daemon=True)
        for n, a in (("central", central), ("site", site))
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
    print(json.dumps(lags))


def percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each part (median shown)")
    parser.add_argument(
        "--rates", default="10000,5000", help="steady events/s of the lag runs, one after another"
    )
    parser.add_argument("--seconds", type=float, default=20, help="length of the lag run")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of it left out")
    parser.add_argument(
        "--postgres", default=os.environ.get("PROTOEVENTS_BENCH_POSTGRES", DEFAULT_POSTGRES)
    )
    parser.add_argument("--watch", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        central, site, count = args.watch
        watch(central, site, int(count))
        return
    with postgres_database(args.postgres) as url:
        migrate.upgrade(url)
        result = run(
            url, events=args.events, runs=args.runs,
            rates=tuple(int(r) for r in args.rates.split(",")), seconds=args.seconds,
            warmup=args.warmup, status=lambda text: print(text, file=sys.stderr),
        )  # fmt: skip
    median = statistics.median
    print(f"site ingest          {median(result.site_rates):>10,.0f} events/s")
    print(
        f"forwarding           {median(result.central_rates):>10,.0f} events/s  "
        f"{median(result.ratios()):.2f}x site ingest"
    )
    print(f"site, central down   {median(result.down_site_rates):>10,.0f} events/s")
    print(
        f"catch-up             {median(result.catchup_rates):>10,.0f} events/s  "
        f"{median(result.catchup_ratios()):.2f}x site ingest"
    )
    for lag in (lag for runs in result.lags.values() for lag in runs):
        c50, c99 = percentiles(lag.central_ms)
        s50, s99 = percentiles(lag.site_ms)
        print(
            f"{lag.rate:,.0f} events/s: to central p50/p99 {c50:.0f}/{c99:.0f} ms, "
            f"stored at the site {s50:.0f}/{s99:.0f} ms"
        )


if __name__ == "__main__":
    main()
