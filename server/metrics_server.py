"""The proxy's metrics and health over HTTP (setting `metrics_listen`), on an address of their
own: `/metrics` is prometheus_client's exposition of the proxy's registry, `/healthz` answers
200 while the proxy is SERVING and 503 otherwise, with a JSON body saying what is wrong.

prometheus_client's WSGI app and threaded WSGI server serve them, on a thread of their own:
a scrape never waits on the event loop (gauges read at scrape time only read integers)."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from protoevents.proxy.health import HealthReport
from protoevents.proxy.ownership import AddressInUseError, address_error

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

TEXT = ("Content-Type", "text/plain; charset=utf-8")


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request (a scrape every few seconds would flood the log)."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


def health_app(health: Callable[[], HealthReport]) -> WSGIApplication:
    """`/healthz`: 200 when the proxy is SERVING, else 503; the body is the report as JSON."""

    def answer(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        report = health()
        body = {
            "status": "SERVING" if report.serving else "NOT_SERVING",
            "problems": list(report.problems),
            "services": dict(report.statuses),
        }
        start_response(
            "200 OK" if report.serving else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
        return [json.dumps(body, indent=2).encode() + b"\n"]

    return answer


def routes(registry: CollectorRegistry, health: Callable[[], HealthReport]) -> WSGIApplication:
    """`/metrics` and `/healthz`; 404 for any other path."""
    metrics, healthz = make_wsgi_app(registry), health_app(health)

    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            exposition: Iterable[bytes] = metrics(environ, start_response)
            return exposition
        if path == "/healthz":
            return healthz(environ, start_response)
        start_response("404 Not Found", [TEXT])
        return [b"not found: this address serves /metrics and /healthz\n"]

    return route


class MetricsServer:
    """The HTTP server of `routes`, listening on `listen` (HOST:PORT; port 0 picks one)."""

    def __init__(
        self, listen: str, registry: CollectorRegistry, health: Callable[[], HealthReport]
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")

        class Server(ThreadingWSGIServer):
            address_family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]

        try:
            self._server = make_server(
                host, int(port), routes(registry, health), Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(f"metrics_listen: {address_error(listen)}") from None
            raise OSError(exc.errno, f"metrics_listen {listen}: {exc.strerror}") from None
        self.host = host
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Stop serving and close the socket (waits for the serving thread to return)."""
        if self._thread.is_alive():
            await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
