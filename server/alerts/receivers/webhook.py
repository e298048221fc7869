"""The webhook receiver (kind `webhook`): each notification POSTed as Alertmanager's webhook
payload (version 4), with an Idempotency-Key header."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from protoevents.proxy.alerts.model import DeliveryError, Notification
from protoevents.proxy.alerts.receivers.alertmanager import payload
from protoevents.proxy.alerts.receivers.base import (
    ReceiverConfigError,
    ReceiverOptions,
    read_secret,
)
from protoevents.proxy.writers.client_tls import client_context
from protoevents.recorder.registry import Registry

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110)
# Headers the receiver sets itself.
_RESERVED = frozenset({"content-type", "content-length", "host", "idempotency-key"})
_SHOWN_BODY = 200  # characters of an error answer quoted in the DeliveryError


@dataclass(frozen=True, slots=True)
class WebhookOptions(ReceiverOptions):
    """POSTs to one URL (see WebhookReceiver)."""

    url: str
    timeout_s: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    bearer_token_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    external_url: str = ""
    generator_url: str = ""

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ReceiverConfigError("url", self.url, "expected an http:// or https:// URL")
        if self.timeout_s <= 0:
            raise ReceiverConfigError("timeout_s", self.timeout_s, "must be greater than 0")
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise ReceiverConfigError(f"headers.{name}", value, "not a valid header name")
            if name.lower() in _RESERVED:
                raise ReceiverConfigError(f"headers.{name}", value, "set by the receiver")
            if "\r" in value or "\n" in value:
                raise ReceiverConfigError(f"headers.{name}", value, "has a line break")
        if self.bearer_token_file is not None:
            if any(name.lower() == "authorization" for name in self.headers):
                raise ReceiverConfigError(
                    "bearer_token_file",
                    self.bearer_token_file,
                    "headers already sets Authorization: keep one of them",
                )
            read_secret("bearer_token_file", self.bearer_token_file)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ReceiverConfigError(
                "tls_key_file", self.tls_key_file, "tls_cert_file and tls_key_file go together"
            )
        if parts.scheme == "https":
            self.ssl_context()  # reads the files now, so a bad one stops the start
        else:
            for key in ("tls_ca_file", "tls_cert_file"):
                if getattr(self, key) is not None:
                    raise ReceiverConfigError(key, getattr(self, key), "only for an https url")

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context (writers/client_tls.py)."""
        cert, key = self.tls_cert_file, self.tls_key_file
        return client_context(self.tls_ca_file, self.tls_verify, cert, key, ReceiverConfigError)


Options = WebhookOptions


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """The seconds a Retry-After header asks to wait (delay-seconds or an HTTP date); None
    when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


class WebhookReceiver:
    """POSTs each notification to `url` as Alertmanager's webhook payload version 4
    (alertmanager.py), with `Idempotency-Key: <notification key>`, the configured headers
    and `Authorization: Bearer <token>` read from `bearer_token_file` at each delivery (so a
    rotated token is used). Redirects are not followed.

    A 2xx answer delivers. Retryable: no connection, a timeout (`timeout_s` for each of
    connect, write, read), 5xx, 429 (with the wait of its Retry-After as `retry_after_s`).
    Permanent: any other answer (4xx, 3xx).
    """

    def __init__(
        self, options: WebhookOptions, name: str = "webhook", registry: Registry | None = None
    ) -> None:
        self.name = name
        self.options = options
        self.registry = registry
        https = urlsplit(options.url).scheme == "https"
        self._client = httpx.AsyncClient(
            timeout=options.timeout_s,
            verify=options.ssl_context() if https else True,
            follow_redirects=False,
            trust_env=False,
        )

    def request_headers(self, notification: Notification) -> dict[str, str]:
        headers = {
            **self.options.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": notification.key,
        }
        if self.options.bearer_token_file is not None:
            try:
                token = read_secret("bearer_token_file", self.options.bearer_token_file)
            except ReceiverConfigError as exc:
                raise DeliveryError(f"webhook {self.name!r}: {exc}", retryable=True) from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def deliver(self, notification: Notification) -> None:
        body = orjson.dumps(
            payload(
                notification,
                external_url=self.options.external_url,
                generator_url=self.options.generator_url,
                registry=self.registry,
            )
        )
        where = f"webhook {self.name!r} ({self.options.url})"
        try:
            response = await self._client.post(
                self.options.url, content=body, headers=self.request_headers(notification)
            )
        except httpx.TimeoutException:
            raise DeliveryError(
                f"{where}: no answer within {self.options.timeout_s} s", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        text = response.text[:_SHOWN_BODY].strip()
        message = f"{where} answered {status} {response.reason_phrase}" + (
            f": {text}" if text else ""
        )
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            raise DeliveryError(message, retryable=True, retry_after_s=wait)
        if 300 <= status < 400:
            message += f" (redirects are not followed; to {response.headers.get('Location')})"
        raise DeliveryError(message, retryable=False)

    async def close(self) -> None:
        await self._client.aclose()


Receiver = WebhookReceiver


def build(options: WebhookOptions, name: str, registry: Registry | None) -> WebhookReceiver:
    return WebhookReceiver(options, name=name, registry=registry)
