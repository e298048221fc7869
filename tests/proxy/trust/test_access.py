"""The access file over real TLS: certificates and tokens prove identities, roles hold each
RPC, sources bind what an identity may record, and a changed file takes effect without a
restart."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from protoevents.recorder.token import metadata
from protoevents.v1 import (
    event_pb2,
    proxy_service_pb2,
    proxy_service_pb2_grpc,
    query_service_pb2,
    query_service_pb2_grpc,
)
from tests.support.access_file import Entry, write_access_file
from tests.support.ingest_helpers import make_events, proxy_settings
from tests.support.live_proxy import LiveProxy
from tests.support.polling import eventually
from tests.support.scrape import scrape, value
from tests.support.tls import SERVER_NAME, Pki

R = proxy_service_pb2
Q = query_service_pb2
FORBIDDEN = R.REJECTION_REASON_SOURCE_FORBIDDEN
NODE_A = Entry("node-a", ["record"], ["node-a/*"], certificates=["node-a.lab.example"], token=None)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def source(node: str, component: str = "controller") -> dict[str, object]:
    return {"source": event_pb2.EventSource(node=node, component=component)}


@pytest.fixture(scope="module")
def host_address() -> str:
    """An address of this host that is not loopback (calls to it are not local)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("this host has no address but loopback")
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this host has no address but loopback")
    return address


def start(
    tmp_path: Path, pki: Pki, *entries: Entry, client_auth: bool, **changes: object
) -> LiveProxy:
    access = write_access_file(tmp_path / "access.toml", *entries)
    settings = proxy_settings(
        tmp_path / "data", access_file=access, writer_batch_interval_ms=10, **changes
    )
    return LiveProxy(settings, credentials=pki.server_credentials(client_auth=client_auth))


def tls_channel(live: LiveProxy, pki: Pki, *names: str) -> grpc.Channel:
    return grpc.secure_channel(f"{SERVER_NAME}:{live.proxy.port}", pki.client_credentials(*names))


def denials(live: LiveProxy, reason: str) -> float:
    value = live.proxy.metrics.registry.get_sample_value(
        "protoevents_denials_total", {"reason": reason}
    )
    return value or 0.0


@pytest.fixture
def mtls(tmp_path: Path, pki: Pki) -> Iterator[LiveProxy]:
    live = start(tmp_path, pki, NODE_A, client_auth=True)
    yield live
    live.stop()


def test_a_certificate_of_node_a_records_as_node_a_and_not_as_node_b(
    mtls: LiveProxy, pki: Pki
) -> None:
    mine = make_events(2, **source("node-a"))
    theirs = make_events(2, **source("node-b"))
    batch = [mine[0], theirs[0], mine[1], theirs[1]]
    with tls_channel(mtls, pki, "node-a.lab.example") as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
        result = stub.RecordBatch(R.RecordBatchRequest(events=batch), timeout=10).result
    assert result.accepted_count == 2
    assert [(r.index, r.event_id, r.reason) for r in result.rejections] == [
        (1, theirs[0].id, FORBIDDEN),
        (3, theirs[1].id, FORBIDDEN),
    ]
    assert "identity 'node-a' may not record events of source node-b/controller" in (
        result.rejections[0].detail
    )
    eventually(lambda: mtls.stored([e.id for e in mine]) == {e.id: 1 for e in mine})
    # The batch was one log record: its allowed events stored, the forbidden ones are not.
    assert mtls.stored([e.id for e in theirs]) == {}
    rejected = mtls.proxy.metrics.registry.get_sample_value(
        "protoevents_events_rejected_total", {"reason": "REJECTION_REASON_SOURCE_FORBIDDEN"}
    )
    assert rejected == 2
    assert denials(mtls, "source_forbidden") == 2


def test_a_recorder_with_the_certificate_gets_its_other_sources_rejected(
    mtls: LiveProxy, pki: Pki, tmp_path: Path
) -> None:
    credentials = pki.client_credentials("node-a.lab.example")
    ids: dict[str, str] = {}
    for node in ("node-a", "node-b"):
        with Recorder(
            component="controller",
            node=node,
            event_types=[ClusterEventType],
            proxy=f"{SERVER_NAME}:{mtls.proxy.port}",
            spool_dir=tmp_path / "spool",
            credentials=credentials,
        ) as recorder:
            ids[node] = recorder.record(
                ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, f"{node} leads"
            )
            assert recorder.drain(30)
            stats = recorder.stats()
        if node == "node-a":
            assert stats.acknowledged == 1 and not stats.rejected
        else:
            assert stats.rejected == {"SOURCE_FORBIDDEN": 1}
    eventually(lambda: mtls.stored([ids["node-a"]]) == {ids["node-a"]: 1})
    assert mtls.stored([ids["node-b"]]) == {}


def test_a_certificate_the_file_does_not_name_is_unauthenticated(mtls: LiveProxy, pki: Pki) -> None:
    with tls_channel(mtls, pki, "node-z.lab.example") as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RecordBatch(R.RecordBatchRequest(events=make_events(1)), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "node-z.lab.example" in caught.value.details()
        assert "proves no identity" in caught.value.details()
        # Health and reflection stay open to any caller.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING


RECORDER = Entry("recorder", ["record"], ["*/*"])
READER = Entry("reader", ["query"])
WATCHER = Entry("watcher", ["watch"])
LAB_A = Entry("lab-a", ["record"], ["lab-a/instrument-*"])


@pytest.fixture
def tokens(tmp_path: Path, pki: Pki) -> Iterator[tuple[LiveProxy, grpc.Channel]]:
    live = start(tmp_path, pki, RECORDER, READER, WATCHER, LAB_A, client_auth=False)
    channel = tls_channel(live, pki)
    yield live, channel
    channel.close()
    live.stop()


def record_batch(channel: grpc.Channel, token: str | None) -> R.BatchResult:
    stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
    request = R.RecordBatchRequest(events=make_events(1))
    return stub.RecordBatch(request, timeout=10, metadata=metadata(token)).result


def list_events(channel: grpc.Channel, token: str | None) -> Q.ListEventsResponse:
    stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
    return stub.ListEvents(Q.ListEventsRequest(page_size=5), timeout=10, metadata=metadata(token))


def watch_first(channel: grpc.Channel, token: str | None) -> Q.WatchEventsResponse:
    stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
    call = stub.WatchEvents(
        Q.WatchEventsRequest(replay_count=1), timeout=10, metadata=metadata(token)
    )
    try:
        return next(call)
    finally:
        call.cancel()


def refusal(call: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_token_roles_hold_record_list_and_watch(
    tokens: tuple[LiveProxy, grpc.Channel],
) -> None:
    live, channel = tokens
    assert record_batch(channel, RECORDER.token).accepted_count == 1
    eventually(lambda: len(list_events(channel, READER.token).events) == 1)
    assert watch_first(channel, WATCHER.token).kind == Q.CHANGE_KIND_REPLAYED
    cases = [
        (record_batch, READER, "record", "/protoevents.v1.EventProxyService/RecordBatch"),
        (list_events, WATCHER, "query", "/protoevents.v1.EventQueryService/ListEvents"),
        (watch_first, RECORDER, "watch", "/protoevents.v1.EventQueryService/WatchEvents"),
    ]
    for call, who, role, method in cases:
        error = refusal(call, channel, who.token)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, method
        assert error.details().startswith(
            f"identity {who.name!r} lacks role {role!r}, which {method} needs"
        )
    assert denials(live, "missing_role") == 3


def test_a_missing_or_unknown_token_is_unauthenticated(
    tokens: tuple[LiveProxy, grpc.Channel],
) -> None:
    live, channel = tokens
    for call in (record_batch, list_events, watch_first):
        missing = refusal(call, channel, None)
        assert missing.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "requires credentials" in missing.details()
        unknown = refusal(call, channel, "not-a-token-of-the-file")
        assert unknown.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "not in the access file" in unknown.details()
    stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
    basic = refusal(
        stub.RecordBatch,
        R.RecordBatchRequest(),
        10,
        (("authorization", "Basic dXNlcg=="),),
    )
    assert basic.code() is grpc.StatusCode.UNAUTHENTICATED
    assert basic.details() == "authorization metadata must be 'Bearer TOKEN'"
    assert denials(live, "no_credentials") == 3
    assert denials(live, "unknown_token") == 4


def test_a_record_stream_without_a_token_gets_unauthenticated_not_internal(
    tokens: tuple[LiveProxy, grpc.Channel],
) -> None:
    _, channel = tokens
    stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
    requests = iter([R.RecordRequest(sequence=1, events=make_events(3))])
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Record(requests, timeout=10))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    replies = stub.Record(
        iter([R.RecordRequest(sequence=1, events=make_events(3))]),
        timeout=10,
        metadata=metadata(RECORDER.token),
    )
    assert [r.result.accepted_count for r in replies] == [3]


def test_the_same_token_is_refused_over_plaintext_from_another_host_but_not_loopback(
    tmp_path: Path, host_address: str
) -> None:
    access = write_access_file(tmp_path / "access.toml", RECORDER)
    settings = proxy_settings(
        tmp_path / "data", access_file=access, listen="0.0.0.0:0", insecure=True
    )
    live = LiveProxy(settings)
    try:
        with grpc.insecure_channel(f"{host_address}:{live.proxy.port}") as remote:
            error = refusal(record_batch, remote, RECORDER.token)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == (
            "a bearer token is accepted only over TLS or a local connection (Unix socket "
            f"or loopback); this call came in plaintext from ipv4:{host_address}"
        )
        assert denials(live, "token_over_plaintext") == 1
        with grpc.insecure_channel(f"127.0.0.1:{live.proxy.port}") as local:
            assert record_batch(local, RECORDER.token).accepted_count == 1
    finally:
        live.stop()


def test_a_token_removed_from_the_file_stops_working_without_a_restart(
    tokens: tuple[LiveProxy, grpc.Channel], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live, channel = tokens
    assert record_batch(channel, RECORDER.token).accepted_count == 1
    path = tmp_path / "access.toml"
    path.write_text(path.read_text() + "\n[[identities]]\nname = 'broken'\nroles = ['wrte']\n")
    lines = path.read_text().splitlines()
    header = lines.index("name = 'broken'")  # the line before it, counted from 1
    # A bad version is refused at its reload (the file is looked at, as calls come, at most
    # once a second), logged once, and the last good one stays in force.
    failures = "protoevents_access_reload_failures_total"

    def reload_failed() -> bool:
        assert record_batch(channel, RECORDER.token).accepted_count == 1
        return live.proxy.metrics.registry.get_sample_value(failures) == 1

    eventually(reload_failed)
    assert f"{path}:{header}: identity 'broken': roles: unknown role 'wrte'" in caplog.text
    assert caplog.text.count("access file not reloaded") == 1
    write_access_file(path, READER, WATCHER)

    def refused() -> bool:
        try:
            record_batch(channel, RECORDER.token)
        except grpc.RpcError as error:
            return error.code() is grpc.StatusCode.UNAUTHENTICATED
        return False

    eventually(refused, timeout=10)
    assert list_events(channel, READER.token).events  # the identities kept still work
    assert live.proxy.access is not None and live.proxy.access.reload()  # as SIGHUP does


def test_denials_are_counted_each_and_logged_once_per_interval_per_identity(
    tokens: tuple[LiveProxy, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    live, channel = tokens
    now = [1000.0]
    assert live.proxy.denials is not None
    live.proxy.denials.throttle.clock = lambda: now[0]
    caplog.set_level(logging.WARNING, logger="protoevents.proxy.access.denials")
    for _ in range(5):
        refusal(list_events, channel, RECORDER.token)
    lines = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("denied identity 'recorder': ")
    refusal(list_events, channel, WATCHER.token)  # another identity
    now[0] += 59.0
    refusal(list_events, channel, RECORDER.token)
    now[0] += 1.0
    refusal(list_events, channel, RECORDER.token)
    lines = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(lines) == 3
    assert lines[1].startswith("denied identity 'watcher': ")
    assert lines[2].endswith("(5 more denied since the last report)")
    assert denials(live, "missing_role") == 8


def test_forbidden_events_are_counted_each_and_logged_once_per_batch_not_per_event(
    tokens: tuple[LiveProxy, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    live, channel = tokens
    caplog.set_level(logging.WARNING, logger="protoevents.proxy.access.denials")
    stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
    allowed = make_events(10, **source("lab-a", "instrument-7"))
    foreign = make_events(100, **source("lab-b", "instrument-7"))
    for batch in (allowed + foreign, make_events(50, **source("lab-a", "controller"))):
        request = R.RecordBatchRequest(events=batch)
        stub.RecordBatch(request, timeout=10, metadata=metadata(LAB_A.token))
    lines = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert lines == [
        "denied identity 'lab-a': 100 event(s) rejected: identity 'lab-a' may not record "
        "events of source lab-b/instrument-7 (its sources: lab-a/instrument-*)"
    ]
    assert denials(live, "source_forbidden") == 150
    eventually(lambda: live.stored([e.id for e in allowed]) == {e.id: 1 for e in allowed})
    assert live.stored([e.id for e in foreign]) == {}


def test_a_recorder_sends_its_token_given_or_from_the_environment(
    tokens: tuple[LiveProxy, grpc.Channel],
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live, _ = tokens
    ids = []
    for given in (LAB_A.token, None):
        if given is None:
            monkeypatch.setenv("PROTOEVENTS_TOKEN", LAB_A.token or "")
        with Recorder(
            component="instrument-2",
            node="lab-a",
            event_types=[ClusterEventType],
            proxy=f"{SERVER_NAME}:{live.proxy.port}",
            spool_dir=tmp_path / "spool",
            credentials=pki.client_credentials(),
            token=given,
        ) as recorder:
            ids.append(
                recorder.record(
                    ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED,
                    "token given" if given else "token from the environment",
                )
            )
            assert recorder.drain(30)
            assert recorder.stats().acknowledged == 1
    eventually(lambda: live.stored(ids) == dict.fromkeys(ids, 1))


def test_the_metrics_page_counts_denials_and_rejections_as_they_happen(
    tmp_path: Path, pki: Pki
) -> None:
    live = start(tmp_path, pki, NODE_A, client_auth=True, metrics_listen="127.0.0.1:0")
    try:
        assert live.proxy.metrics_server is not None
        url = f"http://{live.proxy.metrics_server.address}/metrics"
        before = scrape(url)
        assert value(before, "protoevents_denials_total", reason="source_forbidden") == 0
        assert value(before, "protoevents_denials_total", reason="missing_role") == 0
        mine, theirs = make_events(1, **source("node-a")), make_events(1, **source("node-b"))
        with tls_channel(live, pki, "node-a.lab.example") as channel:
            stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
            stub.RecordBatch(R.RecordBatchRequest(events=[*mine, *theirs]), timeout=10)
            query = query_service_pb2_grpc.EventQueryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as denied:
                query.ListEvents(Q.ListEventsRequest(), timeout=10)
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        after = scrape(url)
        assert value(after, "protoevents_denials_total", reason="source_forbidden") == 1
        assert value(after, "protoevents_denials_total", reason="missing_role") == 1
        forbidden = "REJECTION_REASON_SOURCE_FORBIDDEN"
        assert value(after, "protoevents_events_rejected_total", reason=forbidden) == 1
        assert value(after, "protoevents_events_accepted_total") == 1
    finally:
        live.stop()


def test_a_certificate_naming_a_uri_is_the_identity_the_file_maps_that_uri_to(
    tmp_path: Path, pki: Pki
) -> None:
    spiffe = Entry(
        "node-a-agent",
        ["record"],
        ["node-a/*"],
        certificates=["spiffe://lab.example/node-a/*"],
        token=None,
    )
    live = start(tmp_path, pki, spiffe, client_auth=True)
    try:
        mine, theirs = make_events(1, **source("node-a")), make_events(1, **source("node-b"))
        target = f"{SERVER_NAME}:{live.proxy.port}"
        uri = "spiffe://lab.example/node-a/agent"
        with grpc.secure_channel(target, pki.uri_client_credentials(uri)) as channel:
            stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
            result = stub.RecordBatch(R.RecordBatchRequest(events=[*mine, *theirs]), timeout=10)
        assert result.result.accepted_count == 1
        assert [r.reason for r in result.result.rejections] == [FORBIDDEN]
        assert "identity 'node-a-agent'" in result.result.rejections[0].detail
        eventually(lambda: live.stored([mine[0].id]) == {mine[0].id: 1})
        other = "spiffe://lab.example/node-b/agent"  # the same CA, a URI the file does not map
        with grpc.secure_channel(target, pki.uri_client_credentials(other)) as channel:
            stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.RecordBatch(R.RecordBatchRequest(events=theirs), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        live.stop()
