"""Memory the deduplicator holds: per key, for small and large events, and in a storm.

    python -m bench.bench_dedup_memory [--small-keys 20000] [--large-keys 2000]
        [--data-bytes 60000] [--storm 10000] [--scan]

Per key: distinct events (each its own dedup key) as ingest hands them over, small (about 330 bytes
serialized) and large (`--data-bytes` of data, about 60 KB, under the default `max_data_bytes` of 64
KiB), go through `Deduplicator.observe_many` with bounds that never bind. The memory tracemalloc
traces as still held afterwards, divided by the keys, is shown beside what the deduplicator accounts
against `max_bytes` (`held_bytes`), and the fixed part: what a key holds beyond its event's bytes
and its strings' characters, the measure of `protoevents.proxy.dedup.ENTRY_OVERHEAD`. The
deduplicator holds only Python objects (serialized events, strings, ints, its entries and the LRU),
all of which tracemalloc sees.

Storm: `--storm` distinct large events within one window at the default settings
(`dedup_window_s`, `dedup_max_entries`, `dedup_max_bytes`), in batches of 250 (a request of
them stays under the default 16 MiB message limit): the memory held at the end, the peak
while a batch and its changes are in flight, the keys kept and the evictions. Traced memory
leaves out protobuf messages (upb allocates their arenas itself), so the growth of the
process's resident set is shown too, sampled after each batch (the storm runs first, while
the resident set is small). Beside it, what the key bound alone would let the same keys hold:
`dedup_max_entries` x the per-key figure.

`--scan` also measures the fixed part from 1,000 to 100,000 keys at either side of the dict's
growth steps, as the LRU grows to them and as it evicts at them (`dedup_max_entries` keys, twice
as many events): `ENTRY_OVERHEAD` must be at least the largest, so that the accounted total is
never below what the entries hold.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid
from collections.abc import Generator
from dataclasses import dataclass

import psutil

from bench.bench_sql_writer import make_events
from protoevents.proxy.dedup import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_WINDOW_SECONDS,
    ENTRY_OVERHEAD,
    Deduplicator,
)
from protoevents.v1 import event_pb2

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
STORM_BATCH = 250
UNBOUNDED = 1 << 62
# Either side of the steps at which a dict's table grows (at two thirds full), and the default.
SCAN_KEYS = (
    *sorted({int(2**k * 2 / 3) + d for k in range(11, 18) for d in (-2, 2)}),
    DEFAULT_MAX_ENTRIES,
)


def distinct_events(count: int, data_bytes: int, start_ns: int) -> Generator[event_pb2.Event]:
    """`count` events of distinct messages (so distinct keys) and new ids, complete as ingest
    makes them, with `data_bytes` of data each besides the small data."""
    payload = "x" * data_bytes
    for at in range(0, count, 1000):
        for event in make_events(min(1000, count - at), start_ns + at * 10_000):
            event.message = f"{event.message}, {at}"
            event.id = str(uuid.uuid4())
            if data_bytes:
                event.data["payload"] = payload
            yield event


@dataclass
class PerKey:
    keys: int
    serialized: float  # bytes of one event, serialized (mean)
    traced: float  # bytes per key that tracemalloc sees held
    accounted: float  # bytes per key counted against max_bytes

    @property
    def fixed(self) -> float:
        """Traced bytes per key beyond the event's bytes and the strings' characters."""
        return self.traced - (self.accounted - ENTRY_OVERHEAD)


def traced_after(dedup: Deduplicator, events: list[event_pb2.Event], received_at: int) -> int:
    """Bytes traced as still held once `events` went through `dedup` in batches of 1,000
    (the events themselves, made before, are not counted)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for at in range(0, len(events), 1000):
            dedup.observe_many(events[at : at + 1000], received_at, completed=True)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def per_key(keys: int, data_bytes: int) -> PerKey:
    """Memory per key of `keys` distinct events, the bounds never binding."""
    start = time.time_ns()
    events = list(distinct_events(keys, data_bytes, start))
    serialized = sum(event.ByteSize() for event in events) / keys
    dedup = Deduplicator(DEFAULT_WINDOW_SECONDS, UNBOUNDED, UNBOUNDED)
    held = traced_after(dedup, events, start)
    if len(dedup) != keys:
        raise AssertionError(f"{len(dedup):,} keys kept of {keys:,}")
    return PerKey(keys, serialized, held / keys, dedup.held_bytes / keys)


def fixed_part(keys: int, evicting: bool) -> float:
    """Traced bytes per key beyond the events' bytes and the strings' characters: `keys`
    keys of small events as the LRU grows to them, or (`evicting`) with `max_entries` at
    `keys` while twice as many distinct events go through."""
    start = time.time_ns()
    events = list(distinct_events(2 * keys if evicting else keys, 0, start))
    dedup = Deduplicator(DEFAULT_WINDOW_SECONDS, keys if evicting else UNBOUNDED, UNBOUNDED)
    held = traced_after(dedup, events, start)
    return (held - (dedup.held_bytes - len(dedup) * ENTRY_OVERHEAD)) / len(dedup)


def scan() -> list[str]:
    """The fixed part at the points of SCAN_KEYS, growing and evicting, as a Markdown table."""
    lines = ["| keys | fixed part, growing | fixed part, evicting |", "| --- | --- | --- |"]
    largest = 0.0
    for keys in SCAN_KEYS:
        growing, evicting = fixed_part(keys, False), fixed_part(keys, True)
        largest = max(largest, growing, evicting)
        lines.append(f"| {keys:,} | {growing:,.0f} B | {evicting:,.0f} B |")
    verdict = "covers it" if largest <= ENTRY_OVERHEAD else "is BELOW it"
    return [*lines, "", f"largest {largest:,.0f} B: ENTRY_OVERHEAD ({ENTRY_OVERHEAD} B) {verdict}"]


@dataclass
class Storm:
    events: int
    max_bytes: int
    keys: int
    evictions: int
    held: int  # bytes traced as held at the end
    accounted: int  # held_bytes at the end
    peak: int  # bytes traced at the peak, a batch and its changes in flight
    rss_peak: int  # growth of the resident set at its highest sample, after a batch
    rss_end: int  # and at the end

    @property
    def fixed(self) -> float:
        """Traced bytes per key kept beyond the events' bytes and the strings' characters,
        once the LRU evicts."""
        return (self.held - (self.accounted - self.keys * ENTRY_OVERHEAD)) / self.keys


def storm(events: int, data_bytes: int, max_bytes: int = DEFAULT_MAX_BYTES) -> Storm:
    """`events` distinct large events within one window, at the default bounds."""
    start = time.time_ns()
    dedup = Deduplicator(DEFAULT_WINDOW_SECONDS, DEFAULT_MAX_ENTRIES, max_bytes)
    source = distinct_events(events, data_bytes, start)
    process = psutil.Process()
    gc.collect()
    rss_before = rss_peak = process.memory_info().rss
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for n in range(0, events, STORM_BATCH):
            batch = [next(source) for _ in range(min(STORM_BATCH, events - n))]
            # 1 ms of received time a batch: all within one window.
            dedup.observe_many(batch, start + n // STORM_BATCH * 1_000_000, completed=True)
            del batch
            rss_peak = max(rss_peak, process.memory_info().rss)
        source.close()  # its last events are the traffic's, not the deduplicator's
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_end = process.memory_info().rss
    return Storm(
        events=events,
        max_bytes=max_bytes,
        keys=len(dedup),
        evictions=dedup.evictions,
        held=held - before,
        accounted=dedup.held_bytes,
        peak=peak - before,
        rss_peak=rss_peak - rss_before,
        rss_end=rss_end - rss_before,
    )


def key_bound_alone(large: PerKey) -> float:
    """Bytes the default key bound alone would let keys of large events hold."""
    return DEFAULT_MAX_ENTRIES * large.traced


def report(small: PerKey, large: PerKey, stormed: Storm, data_bytes: int) -> list[str]:
    """The figures as Markdown tables."""
    lines = [
        "| events | keys | serialized | traced per key | accounted per key | fixed part |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in (("small", small), (f"large ({data_bytes:,} B of data)", large)):
        lines.append(
            f"| {name} | {row.keys:,} | {row.serialized:,.0f} B | {row.traced:,.0f} B "
            f"({row.traced / KiB:,.1f} KiB) | {row.accounted:,.0f} B | {row.fixed:,.0f} B |"
        )
    lines += [
        "",
        f"fixed part: traced per key less the event's bytes and the strings' characters "
        f"(ENTRY_OVERHEAD, accounted per key, is {ENTRY_OVERHEAD} B)",
        "",
        f"Storm of {stormed.events:,} distinct large events within one window, default "
        f"settings (window {DEFAULT_WINDOW_SECONDS:g} s, {DEFAULT_MAX_ENTRIES:,} keys, "
        f"max_bytes {stormed.max_bytes / MiB:,.0f} MiB):",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| keys kept / evictions | {stormed.keys:,} / {stormed.evictions:,} |",
        f"| held at the end: traced / accounted | {stormed.held / MiB:,.1f} / "
        f"{stormed.accounted / MiB:,.1f} MiB |",
        f"| fixed part per key, evicting | {stormed.fixed:,.0f} B |",
        f"| traced peak, a batch of {STORM_BATCH} and its changes in flight "
        f"| {stormed.peak / MiB:,.1f} MiB |",
        f"| resident set growth: at the peak / at the end "
        f"| {stormed.rss_peak / MiB:,.1f} / {stormed.rss_end / MiB:,.1f} MiB |",
        f"| the key bound alone: {DEFAULT_MAX_ENTRIES:,} keys x {large.traced / KiB:,.1f} KiB "
        f"| {key_bound_alone(large) / GiB:,.1f} GiB |",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-keys", type=int, default=20_000, help="keys of small events")
    parser.add_argument("--large-keys", type=int, default=2_000, help="keys of large events")
    parser.add_argument("--data-bytes", type=int, default=60_000, help="data of a large event")
    parser.add_argument("--storm", type=int, default=10_000, help="large events in the storm")
    parser.add_argument(
        "--scan", action="store_true", help="also the fixed part from 1,000 to 100,000 keys"
    )
    args = parser.parse_args()
    stormed = storm(args.storm, args.data_bytes)  # first, while the resident set is small
    small = per_key(args.small_keys, 0)
    large = per_key(args.large_keys, args.data_bytes)
    for line in report(small, large, stormed, args.data_bytes):
        print(line)
    if args.scan:
        print()
        for line in scan():
            print(line)


if __name__ == "__main__":
    main()
