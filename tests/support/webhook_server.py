"""A webhook receiver for the tests: a ThreadingHTTPServer on a loopback port that records
every request and gives the answers queued for it (200 when none is)."""

from __future__ import annotations

import json
import queue
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """What the server answers one request with."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class WebhookServer:
    """Records requests in `requests`; `answer(...)` queues the answer of the next request
    (then the next...); while `release` is clear, requests wait for it (a receiver too
    slow). With `context`, serves HTTPS."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if context is not None else "http"
        self.requests: list[Request] = []
        self.answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self.release = threading.Event()
        self.release.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                server.requests.append(
                    Request("POST", self.path, {k: v for k, v in self.headers.items()}, body)
                )
                server.release.wait(30)
                try:
                    answer = server.answers.get_nowait()
                except queue.Empty:
                    answer = Answer()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        if context is not None:
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/alerts"

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.answers.put(Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)
