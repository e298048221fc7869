"""Which peers are local (a token may come in plaintext), and which role each method needs."""

from __future__ import annotations

import pytest

from protoevents.proxy.access.callers import is_local, peer_host
from protoevents.proxy.access.interceptor import role_of


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:50000", True),
        ("ipv4:127.1.2.3:1", True),
        ("ipv6:[::1]:50000", True),
        ("ipv6:[::ffff:127.0.0.1]:50000", True),
        ("unix:/run/protoevents.sock", True),
        ("unix-abstract:protoevents", True),
        ("ipv4:192.0.2.2:50000", False),
        ("ipv4:10.127.0.1:50000", False),
        ("ipv6:[fd00::2]:50000", False),
        ("ipv6:[::ffff:10.0.0.1]:50000", False),
        ("", False),
    ],
)
def test_only_loopback_and_unix_peers_are_local(peer: str, local: bool) -> None:
    assert is_local(peer) is local


def test_denials_are_reported_per_host_not_per_connection() -> None:
    assert peer_host("ipv4:192.0.2.2:50000") == peer_host("ipv4:192.0.2.2:50001")
    assert peer_host("ipv6:[fd00::2]:50000") == "ipv6:[fd00::2]"


@pytest.mark.parametrize(
    ("method", "role"),
    [
        ("/protoevents.v1.EventProxyService/Record", "record"),
        ("/protoevents.v1.EventProxyService/RecordBatch", "record"),
        ("/protoevents.v1.EventQueryService/GetEvent", "query"),
        ("/protoevents.v1.EventQueryService/ListEvents", "query"),
        ("/protoevents.v1.EventQueryService/ListEventTypes", "query"),
        ("/protoevents.v1.EventQueryService/WatchEvents", "watch"),
        ("/protoevents.v1.EventQueryService/PurgeEvents", "admin"),  # anything not listed
        ("/grpc.health.v1.Health/Check", None),
        ("/grpc.health.v1.Health/Watch", None),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None),
    ],
)
def test_each_method_needs_its_role_and_health_and_reflection_none(
    method: str, role: str | None
) -> None:
    assert role_of(method) == role
