"""Proxy memory over a long run: `protoevents serve` RSS while recorders send steadily.

    python -m bench.bench_soak [--minutes 10] [--rate 5000] [--db sqlite|postgresql]

Starts `protoevents serve` (fsync=batch) and records `--rate` events/s from one recorder in this
process, a quarter of them repeats so that dedup entries come and go, for `--minutes`. The
proxy's resident set size is sampled every `--sample-s` seconds. Reports the growth from the
one-minute mark, and from the end of the warm-up: the time the proxy's bounded caches take to
fill (the recent-id cache of `idempotency_cache_size` ids, by default 1,000,000 at about
150 bytes each; the dedup keys of one window), after which the RSS must stay flat. Checks
that every distinct event was stored. JSON of the samples with `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.bench_pipeline import DEFAULT_POSTGRES, proxy, wait_stored
from bench.bench_sql_writer import postgres_database
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.recorder import Recorder

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
MIB = 1 << 20


@dataclass(frozen=True)
class SoakConfig:
    """How long and how fast to record, and the proxy's recent-id cache size."""

    minutes: float = 10.0
    rate: int = 10_000
    id_cache: int = 1_000_000
    sample_s: float = 10.0
    min_warmup_s: float = 60.0


def soak(
    url: str, args: SoakConfig, folder: Path, status: Callable[[str], None] = lambda _: None
) -> dict[str, object]:
    """Record at `args.rate` for `args.minutes` into a fresh `serve` on `url`, sampling its
    RSS; returns the growth figures (MiB) and the samples."""
    with proxy(url, folder / "data", ["--idempotency-cache-size", str(args.id_cache)]) as address:
        serve = next(
            child for child in psutil.Process().children() if "serve" in " ".join(child.cmdline())
        )
        engine = create_engine(url)
        recorder = Recorder(
            component="soak", event_types=[ClusterEventType], proxy=address,
            spool_dir=folder / "spool", queue_size=1_000_000,
        )  # fmt: skip
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        end = start + args.minutes * 60
        next_sample = start
        sent = distinct = 0
        last_id = ""
        while (now := time.monotonic()) < end:
            due = int((now - start) * args.rate)
            while sent < due:
                # One event in four repeats a recent message: dedup merges it into a count.
                if sent % 4 == 3:
                    recorder.record(ELECTED, f"repeat {sent // 400}")
                else:
                    last_id = recorder.record(ELECTED, f"event {sent}")
                    distinct += 1
                sent += 1
            if now >= next_sample:
                samples.append((now - start, serve.memory_info().rss / MIB))
                next_sample += args.sample_s
                status(f"{now - start:.0f} of {args.minutes * 60:.0f} s, {samples[-1][1]:.0f} MiB")
            time.sleep(0.005)
        last_id = recorder.record(ELECTED, "the last event")  # distinct, so stored last
        distinct += 1
        recorder.flush(60)
        samples.append((time.monotonic() - start, serve.memory_info().rss / MIB))
        recorder.close(30)
        repeats = len({f"repeat {i // 400}" for i in range(3, sent, 4)})
        wait_stored(engine, distinct + repeats, last_id, timeout=600)
        engine.dispose()
    ids_per_s = args.rate * 3 / 4
    warmup_s = max(args.min_warmup_s, args.id_cache / ids_per_s + 15)

    def rss_at(second: float) -> float:
        return next((rss for at, rss in samples if at >= second), samples[-1][1])

    minute, warm = rss_at(min(60.0, warmup_s)), rss_at(warmup_s)
    peak_after_warmup = max((rss for at, rss in samples if at >= warmup_s), default=warm)
    last = samples[-1][1]
    return {
        "events": sent,
        "minutes": args.minutes,
        "warmup_s": round(warmup_s),
        "rss_at_1_min_mib": round(minute, 1),
        "rss_after_warmup_mib": round(warm, 1),
        "rss_end_mib": round(last, 1),
        "growth_from_1_min_mib": round(last - minute, 1),
        "growth_after_warmup_mib": round(last - warm, 1),
        "peak_growth_after_warmup_mib": round(peak_after_warmup - warm, 1),
        "samples": [(round(at, 1), round(rss, 1)) for at, rss in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument(
        "--id-cache", type=int, default=1_000_000, help="the proxy's idempotency_cache_size"
    )
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgres", default=os.environ.get("PROTOEVENTS_BENCH_POSTGRES", DEFAULT_POSTGRES)
    )
    parser.add_argument("--json", type=Path, help="write the result and samples here")
    args = parser.parse_args()
    config = SoakConfig(args.minutes, args.rate, args.id_cache, args.sample_s)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.db == "sqlite":
            url = f"sqlite:///{folder}/events.db"
            migrate.upgrade(url)
            result = soak(url, config, folder)
        else:
            with postgres_database(args.postgres) as url:
                migrate.upgrade(url)
                result = soak(url, config, folder)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    samples = result.pop("samples")
    del samples
    for key, value in result.items():
        print(f"{key:<22} {value}")


if __name__ == "__main__":
    main()
