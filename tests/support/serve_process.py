"""`protoevents serve` as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_events
from tests.support.paths import ROOT


class ServeProcess:
    """A `protoevents serve` subprocess on a free loopback port.

    `jsonl=False` leaves the JSON lines writer out. `preexec_fn` runs in the child before
    `serve` starts (to lower a resource limit, say). With `follow_log`, a thread reads the
    log (stderr) as it comes, so that a long run never blocks on a full pipe: read it with
    `log()`, not from `process.stderr`. With `--metrics-listen` in `flags`, `metrics_url` is
    where its metrics page is."""

    def __init__(
        self,
        data_dir: Path,
        *flags: str,
        jsonl: bool = True,
        preexec_fn: Callable[[], None] | None = None,
        follow_log: bool = False,
    ) -> None:
        self.jsonl = data_dir / "changes.jsonl"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "protoevents.proxy.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                *(["--jsonl-path", str(self.jsonl)] if jsonl else []),
                *([] if "--db" in flags else ["--db", f"sqlite:///{data_dir}/events.db"]),
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,  # noqa: PLW1509 - callers pass a bare setrlimit
        )
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._follower: threading.Thread | None = None
        if follow_log:
            self._follower = threading.Thread(target=self._follow, daemon=True)
            self._follower.start()
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("listening on "):
            self.process.kill()
            _, errors = self.process.communicate()
            raise AssertionError(f"no address printed: {first!r} {errors}")
        self.address = first.removeprefix("listening on ").strip()
        self.metrics_url: str | None = None  # http://HOST:PORT/metrics with --metrics-listen
        if "--metrics-listen" in flags:
            second = self.process.stdout.readline()
            assert second.startswith("metrics on http://"), second
            self.metrics_url = second.removeprefix("metrics on ").strip()
        self.channel = grpc.insecure_channel(self.address)
        self.stub = proxy_service_pb2_grpc.EventProxyServiceStub(self.channel)

    def record(self, batches: int, size: int) -> list[str]:
        """Stream batches; returns the ids of the acknowledged ones."""
        sent = {n: make_events(size) for n in range(1, batches + 1)}
        requests = (proxy_service_pb2.RecordRequest(sequence=n, events=e) for n, e in sent.items())
        acked: list[str] = []
        for response in self.stub.Record(requests, timeout=60):
            assert response.result.accepted_count == size
            acked.extend(e.id for e in sent[response.sequence])
        return acked

    def stop(self, signum: int) -> int:
        self.channel.close()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        if self._follower is not None:
            self._follower.join(10)
        return code

    def _follow(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._log_lock:
                self._log.append(line)

    def log(self) -> str:
        """What `serve` logged so far (with `follow_log`)."""
        assert self._follower is not None, "start the process with follow_log=True"
        with self._log_lock:
            return "".join(self._log)

    def written_ids(self) -> list[str]:
        if not self.jsonl.exists():
            return []
        lines = self.jsonl.read_text().splitlines()
        return [json.loads(line)["event"]["id"] for line in lines if line]


def serve(
    processes: list[ServeProcess],
    data: Path,
    url: str,
    *flags: str,
    port: int = 0,
    follow_log: bool = False,
) -> ServeProcess:
    proxy = ServeProcess(
        data, "--db", url, "--listen", f"127.0.0.1:{port}", *flags, follow_log=follow_log
    )
    processes.append(proxy)
    return proxy
