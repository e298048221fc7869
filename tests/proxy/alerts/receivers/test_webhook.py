"""The webhook receiver against a real HTTP server: Alertmanager's payload version 4 field by
field, the Idempotency-Key and other headers, HTTPS, and what is retryable."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from protoevents.proxy.alerts.model import DeliveryError, Notification
from protoevents.proxy.alerts.receivers.base import ReceiverConfigError
from protoevents.proxy.alerts.receivers.kinds import build_receiver, parse_receiver
from protoevents.proxy.alerts.receivers.webhook import (
    WebhookOptions,
    WebhookReceiver,
    retry_after,
)
from protoevents.recorder.registry import Registry
from tests.support.notifications import alerting_event, notification
from tests.support.webhook_server import WebhookServer

DESCRIPTION = "A node was elected leader of the cluster."


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    running = WebhookServer().start()
    yield running
    running.stop()


def deliver(receiver: WebhookReceiver, sent: Notification) -> None:
    async def main() -> None:
        try:
            await receiver.deliver(sent)
        finally:
            await receiver.close()

    asyncio.run(main())


def failure(receiver: WebhookReceiver, sent: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        deliver(receiver, sent or notification())
    return caught.value


def receiver(url: str, registry: Registry | None = None, **options: Any) -> WebhookReceiver:
    return WebhookReceiver(WebhookOptions(url=url, **options), name="ops", registry=registry)


def test_the_payload_is_alertmanager_version_4_field_by_field(server: WebhookServer) -> None:
    first, second = alerting_event(0), alerting_event(1)
    first.site = "lab-a"
    first.object.namespace = "rack-1"
    sent = notification(first, second, truncated=3, extra={"runbook": "https://x/rb"})
    deliver(
        receiver(
            server.url,
            Registry.builtin(),
            external_url="https://events.example",
            generator_url="https://events.example/events/{event_id}",
        ),
        sent,
    )

    (request,) = server.requests
    body = request.json()
    assert list(body) == [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ]
    assert body["version"] == "4"
    assert body["groupKey"] == "category=cluster"
    assert body["truncatedAlerts"] == 3
    assert body["status"] == "firing"
    assert body["receiver"] == "ops"
    assert body["groupLabels"] == {"category": "cluster"}
    assert body["externalURL"] == "https://events.example"
    first_labels = {
        "alertname": "CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        "rule": "nic-down",
        "severity": "error",
        "category": "cluster",
        "node": "node-0",
        "component": "cluster-controller",
        "object_kind": "Node",
        "object_namespace": "rack-1",
        "object_name": "node-0",
        "site": "lab-a",
        "term": "0",
    }
    second_labels = first_labels | {"node": "node-1", "object_name": "node-1", "term": "1"}
    del second_labels["site"], second_labels["object_namespace"]
    assert [a["labels"] for a in body["alerts"]] == [first_labels, second_labels]
    assert body["commonLabels"] == {
        "alertname": "CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        "rule": "nic-down",
        "severity": "error",
        "category": "cluster",
        "component": "cluster-controller",
        "object_kind": "Node",
    }
    assert body["alerts"][0]["annotations"] == {
        "runbook": "https://x/rb",
        "message": "node-0 was elected leader",
        "description": DESCRIPTION,
        "event_id": first.id,
        "count": "1",
        "first_time": "2026-01-01T00:00:00.000000Z",
        "last_time": "2026-01-01T00:00:00.000000Z",
    }
    assert body["alerts"][1]["annotations"]["count"] == "2"
    assert body["alerts"][1]["annotations"]["first_time"] == "2026-01-01T00:00:00.001000Z"
    assert body["commonAnnotations"] == {"runbook": "https://x/rb", "description": DESCRIPTION}
    for alert, event in zip(body["alerts"], (first, second), strict=True):
        assert list(alert) == [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ]
        assert alert["status"] == "firing"
        assert alert["startsAt"] == alert["annotations"]["first_time"]
        # Go's zero time: an alert not ended, as Alertmanager sends it.
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert alert["generatorURL"] == f"https://events.example/events/{event.id}"
        assert len(alert["fingerprint"]) == 16
        int(alert["fingerprint"], 16)
        assert dt.datetime.fromisoformat(alert["startsAt"]).tzinfo == dt.UTC
    assert body["alerts"][0]["fingerprint"] != body["alerts"][1]["fingerprint"]


def test_fingerprints_are_prometheus_label_fingerprints() -> None:
    from protoevents.proxy.alerts.receivers.fields import fingerprint

    # Prometheus' own test values (common/model signature_test.go).
    assert fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert int(fingerprint(labels), 16) == 5799056148416392346


def test_an_attribute_named_as_an_event_field_keeps_its_value_apart(server: WebhookServer) -> None:
    event = alerting_event(0)
    event.attributes["node"] = "bmc-0"
    event.attributes["nic.name"] = "eth0"
    deliver(receiver(server.url), notification(event))
    labels = server.requests[0].json()["alerts"][0]["labels"]
    assert labels["node"] == "node-0"
    assert labels["attribute_node"] == "bmc-0"
    assert labels["nic_name"] == "eth0"
    # Without a registry, an event type's description is not known: no annotation.
    assert "description" not in server.requests[0].json()["alerts"][0]["annotations"]


def test_headers_carry_the_idempotency_key_and_the_token(
    server: WebhookServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    sent = notification(key="nic-down/category=cluster/7")
    deliver(
        receiver(server.url, headers={"X-Team": "ops"}, bearer_token_file=token),
        sent,
    )
    (request,) = server.requests
    assert request.method == "POST"
    assert request.path == "/alerts"
    assert request.headers["Idempotency-Key"] == "nic-down/category=cluster/7"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["X-Team"] == "ops"


def test_a_resend_carries_the_same_key(server: WebhookServer) -> None:
    server.answer(503)
    sent = notification()
    first = receiver(server.url)
    assert failure(first, sent).retryable
    deliver(receiver(server.url), sent)
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert keys == [sent.key, sent.key]
    assert server.requests[0].body == server.requests[1].body


def test_5xx_is_retryable_and_quotes_the_answer(server: WebhookServer) -> None:
    server.answer(500, b"database is down")
    error = failure(receiver(server.url))
    assert error.retryable
    assert error.retry_after_s is None
    assert "answered 500 Internal Server Error: database is down" in str(error)


def test_429_is_retryable_after_the_wait_it_asks(server: WebhookServer) -> None:
    server.answer(429, Retry_After="7")
    error = failure(receiver(server.url))
    assert error.retryable
    assert error.retry_after_s == 7.0


def test_503_with_an_http_date_retry_after(server: WebhookServer) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    server.answer(503, Retry_After=later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    error = failure(receiver(server.url))
    assert error.retryable
    assert error.retry_after_s is not None
    assert 100 < error.retry_after_s <= 120


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_are_permanent(server: WebhookServer, status: int) -> None:
    server.answer(status, b"bad payload")
    error = failure(receiver(server.url))
    assert not error.retryable
    assert f"answered {status}" in str(error)


def test_a_redirect_is_not_followed_and_is_permanent(server: WebhookServer) -> None:
    server.answer(302, Location="http://elsewhere.example/")
    error = failure(receiver(server.url))
    assert not error.retryable
    assert "elsewhere.example" in str(error)
    assert len(server.requests) == 1


def test_no_server_is_retryable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    error = failure(receiver(f"http://127.0.0.1:{port}/alerts"))
    assert error.retryable
    assert "ConnectError" in str(error)


def test_a_server_too_slow_times_out_retryable(server: WebhookServer) -> None:
    server.release.clear()
    error = failure(receiver(server.url, timeout_s=0.3))
    assert error.retryable
    assert "no answer within 0.3 s" in str(error)


def test_https_with_the_ca_given(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = WebhookServer(context).start()
    try:
        deliver(receiver(server.url, tls_ca_file=ca_file), notification())
        assert len(server.requests) == 1
        # Without the CA, the certificate is not trusted: retryable (a CA can be fixed).
        error = failure(receiver(server.url))
        assert error.retryable
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
        deliver(receiver(server.url, tls_verify=False), notification())
        assert len(server.requests) == 2
    finally:
        server.stop()


def test_a_receiver_built_from_its_table(server: WebhookServer) -> None:
    options = parse_receiver("webhook", {"url": server.url, "timeout_s": 5})
    built = build_receiver("webhook", options, "ops")
    assert isinstance(built, WebhookReceiver)
    deliver(built, notification())
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "url = None: required for a webhook receiver"),
        ({"url": "ftp://x"}, "url = 'ftp://x': expected an http:// or https:// URL"),
        ({"url": "http://x", "timeout_s": 0}, "timeout_s = 0.0: must be greater than 0"),
        ({"url": "http://x", "timeout_s": "5"}, "timeout_s = '5': expected a number"),
        ({"url": "http://x", "retries": 3}, "retries = 3: unknown key for a webhook receiver"),
        ({"url": "http://x", "headers": {"Bad Name": "v"}}, "headers.Bad Name = 'v': not a valid"),
        (
            {"url": "http://x", "headers": {"Idempotency-Key": "v"}},
            "headers.Idempotency-Key = 'v': set by the receiver",
        ),
        ({"url": "http://x", "headers": ["a"]}, "headers = ['a']: expected a table of strings"),
        (
            {"url": "http://x", "bearer_token_file": "/nonexistent/token"},
            "bearer_token_file = '/nonexistent/token': cannot be read",
        ),
        (
            {"url": "http://x", "tls_ca_file": "/nonexistent/ca.pem"},
            "tls_ca_file = '/nonexistent/ca.pem': only for an https url",
        ),
        (
            {"url": "https://x", "tls_ca_file": "/nonexistent/ca.pem"},
            "tls_ca_file = '/nonexistent/ca.pem': [Errno 2]",
        ),
    ],
)
def test_bad_options_are_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ReceiverConfigError) as caught:
        parse_receiver("webhook", table)
    assert str(caught.value).startswith(message)


def test_a_token_file_and_an_authorization_header_conflict(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    options = {"url": "http://x", "bearer_token_file": str(token)}
    with pytest.raises(ReceiverConfigError, match="headers already sets Authorization"):
        parse_receiver("webhook", options | {"headers": {"authorization": "Basic x"}})
    token.write_text("  \n")
    with pytest.raises(ReceiverConfigError, match="the file is empty"):
        parse_receiver("webhook", options)


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ReceiverConfigError, match="kind = 'pager': expected one of webhook"):
        parse_receiver("pager", {})


def test_retry_after_forms() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert retry_after("30", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60.0
    assert retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after("-5", now) is None
    assert retry_after(None, now) is None
