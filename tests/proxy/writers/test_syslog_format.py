"""Syslog message formats: RFC 5424 header, structured data and escaping, RFC 3164, sizes."""

from __future__ import annotations

import pytest

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.writers.syslog_format import Rfc3164, Rfc5424, escape_param
from protoevents.v1 import severity_pb2
from tests.support.events import repeated, stored_event

EVENT_ID = "0194f3b2-7c1e-7000-8000-000000000001"
LOCAL0 = 16
TYPE = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"
T0 = "2026-01-01T00:00:00.000000Z"


def created(**fields: str) -> Change:
    return Change(CREATED, stored_event(0, event_id=EVENT_ID, **fields))


def test_rfc5424_message_carries_the_event_in_structured_data() -> None:
    frame = Rfc5424(LOCAL0).format(created())
    assert (
        frame
        == (
            f"<134>1 {T0} node-0 protoevents - CLUSTER_EVENT_TYPE_LEADER_ELECTE "
            f'[event@32473 id="{EVENT_ID}" change="created" type="{TYPE}" severity="INFO" '
            'category="cluster" node="node-0" component="cluster-controller" object_kind="Node" '
            f'object_name="node-0" count="1" time="{T0}" first_time="{T0}" last_time="{T0}"]'
            '[attributes@32473 term="0"] node-0 was elected leader'
        ).encode()
    )


def test_a_forwarded_event_names_its_site_in_both_formats() -> None:
    change = created()
    change.event.site = 'site "a"]'
    frame = Rfc5424(LOCAL0).format(change)
    assert b' category="cluster" site="site \\"a\\"\\]" node="node-0" ' in frame
    assert (
        Rfc3164(LOCAL0)
        .format(change)
        .endswith(
            b"[id=" + EVENT_ID.encode() + b' component=cluster-controller site=site "a"] '
            b"object=Node/node-0 count=1]"
        )
    )


def test_a_forced_alert_says_so_in_both_formats_and_a_plain_event_does_not() -> None:
    change = created()
    change.event.alert = True
    frame = Rfc5424(LOCAL0).format(change)
    assert b' severity="INFO" alert="true" category="cluster" ' in frame
    assert (
        Rfc3164(LOCAL0)
        .format(change)
        .endswith(
            b"[id=" + EVENT_ID.encode() + b" component=cluster-controller alert=true "
            b"object=Node/node-0 count=1]"
        )
    )
    plain = created()
    assert b"alert" not in Rfc5424(LOCAL0).format(plain)
    assert b"alert" not in Rfc3164(LOCAL0).format(plain)


def test_an_update_reports_its_count_at_the_latest_occurrence() -> None:
    first = stored_event(0, event_id=EVENT_ID)
    frame = Rfc5424(LOCAL0, app_name="events", enterprise_number=99999).format(
        Change(UPDATED, repeated(first, 7, later_ms=1500))
    )
    assert frame.startswith(b"<134>1 2026-01-01T00:00:01.500000Z node-0 events - ")
    assert b'[event@99999 id="' + EVENT_ID.encode() + b'" change="updated" ' in frame
    assert b'count="7"' in frame
    assert b'last_time="2026-01-01T00:00:01.500000Z"' in frame


def test_param_values_escape_quote_backslash_and_bracket() -> None:
    assert escape_param('a "b" \\c] d') == 'a \\"b\\" \\\\c\\] d'
    change = created(category='dis"k]\\s')
    change.event.attributes.clear()
    change.event.attributes["disk name"] = 'C:\\data "main"]'
    change.event.attributes["a=b"] = "x"
    change.event.data.update({"path": '/x"]'})
    frame = Rfc5424(LOCAL0).format(change)
    assert b' category="dis\\"k\\]\\\\s" ' in frame
    assert b'[attributes@32473 a_b="x" disk_name="C:\\\\data \\"main\\"\\]"]' in frame
    assert b' data="{\\"path\\":\\"/x\\\\\\"\\]\\"}"]' in frame


@pytest.mark.parametrize(
    ("severity", "syslog_severity"),
    [
        (severity_pb2.SEVERITY_DEBUG, 7),
        (severity_pb2.SEVERITY_INFO, 6),
        (severity_pb2.SEVERITY_WARNING, 4),
        (severity_pb2.SEVERITY_ERROR, 3),
        (severity_pb2.SEVERITY_CRITICAL, 2),
    ],
)
def test_severity_maps_to_the_syslog_severity(severity: int, syslog_severity: int) -> None:
    change = created()
    change.event.severity = severity  # type: ignore[assignment]
    assert Rfc5424(LOCAL0).format(change).startswith(b"<%d>1 " % (128 + syslog_severity))
    assert Rfc3164(3).format(change).startswith(b"<%d>Jan  1 " % (24 + syslog_severity))


def test_header_fields_are_printable_ascii_and_a_non_ascii_message_starts_with_a_bom() -> None:
    change = created(node="node 7", message="température élevée")
    frame = Rfc5424(LOCAL0).format(change)
    assert frame.startswith(b"<134>1 " + T0.encode() + b" node_7 protoevents - ")
    assert frame.endswith(b"] \xef\xbb\xbf" + "température élevée".encode())
    assert b'node="node 7"' in frame  # the exact node stays in the structured data


def test_udp_size_limit_cuts_the_message_first_then_the_structured_data() -> None:
    formatter = Rfc5424(LOCAL0)
    change = created(message="é" * 3000)
    whole = formatter.format(change)
    cut = formatter.format(change, max_bytes=1000)
    assert len(cut) <= 1000
    assert cut == whole[: len(cut)]  # same frame, message shortened at a character boundary
    cut.decode()

    change.event.data.update({"blob": "x" * 5000})
    smaller = formatter.format(change, max_bytes=1000)
    assert len(smaller) <= 1000
    assert b"data=" not in smaller and b"[attributes@32473" in smaller

    for key in range(200):
        change.event.attributes[f"key-{key}"] = "v" * 20
    smallest = formatter.format(change, max_bytes=600)
    assert len(smallest) <= 600
    assert b"CLUSTER_EVENT_TYPE_LEADER_ELECTE [event@32473 " in smallest
    assert b"[attributes@" not in smallest


def test_rfc3164_message() -> None:
    frame = Rfc3164(LOCAL0).format(created())
    assert frame == (
        b"<134>Jan  1 00:00:00 node-0 protoevents: CLUSTER_EVENT_TYPE_LEADER_ELECTED: "
        b"node-0 was elected leader [id=" + EVENT_ID.encode() + b" "
        b"component=cluster-controller object=Node/node-0 count=1]"
    )
    long = Rfc3164(LOCAL0).format(created(message="x" * 2000), max_bytes=1024)
    assert len(long) == 1024
