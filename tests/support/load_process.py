"""A component under load, as its own process: records at a steady rate until its stdin
closes, then drains its recorder and prints the ids it recorded, one a line, and its stats.

    python -m tests.support.load_process PROXY SPOOL_DIR COMPONENT EVENTS_PER_SECOND
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
TICK_S = 0.01


def main(proxy: str, spool: str, component: str, rate: int) -> int:
    recorder = Recorder(
        component=component,
        node="node-1",
        event_types=[ClusterEventType],
        proxy=proxy,
        spool_dir=spool,
        batch_size=200,
        flush_interval=0.02,
        backoff_max=0.2,
        ack_timeout=5.0,
    )
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    ids: list[str] = []
    per_tick = max(1, round(rate * TICK_S))
    started = time.monotonic()
    while not stop.is_set():
        ids.extend(recorder.record(ELECTED, f"{component} {len(ids)}") for _ in range(per_tick))
        # Keep the rate: wait for the next tick (or for the end of the load).
        stop.wait(max(0.0, started + len(ids) / rate - time.monotonic()))
    drained = recorder.drain(120)
    recorder.close(10)
    for event_id in ids:
        print(event_id)
    stats = dataclasses.asdict(recorder.stats())
    print(json.dumps({"drained": drained, "stats": stats}, default=str))
    return 0


if __name__ == "__main__":
    proxy, spool, component, rate = sys.argv[1:5]
    sys.exit(main(proxy, spool, component, int(rate)))
