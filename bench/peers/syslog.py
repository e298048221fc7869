"""stdlib logging to syslog: `logging.handlers.SysLogHandler` over UDP to a counting listener."""

from __future__ import annotations

import logging
import logging.handlers
import socket
import time
from multiprocessing.connection import Connection

from bench.peers.sink import Counter, add


def udp_sink(counter: Counter, conn: Connection) -> None:
    """Child process: a UDP listener on a loopback port (default receive buffer) that counts
    datagrams, one per syslog message."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        conn.send(listener.getsockname()[1])
        while True:
            listener.recv(65536)
            add(counter, 1)


def log_all(port: int, counter: Counter, emitted: int, settle_s: float = 0.5) -> float:
    """Log `emitted` records as fast as the caller can to the syslog listener on `port`; wait
    until its count has not moved for `settle_s`; returns the seconds from the first record to
    the last one counted. The counter then holds what was delivered."""
    logger = logging.getLogger(f"bench.syslog.{port}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.handlers.SysLogHandler(address=("127.0.0.1", port))
    logger.addHandler(handler)
    started = time.perf_counter()
    try:
        for _ in range(emitted):
            logger.info("node-7 leads")
    finally:
        logger.removeHandler(handler)
        handler.close()
    last, last_change = counter.value, time.perf_counter()
    while time.perf_counter() - last_change < settle_s:
        time.sleep(0.01)
        if (now := counter.value) != last:
            last, last_change = now, time.perf_counter()
    return last_change - started
