"""The tools a user points at a running proxy: grpcurl (no .proto files at hand) and the
`protoevents query` and `tail` commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import descriptor_pb2, struct_pb2
from grpc_reflection.v1alpha import reflection_pb2

from protoevents.proxy.cli.event_filters import event_cells, event_json
from protoevents.v1 import event_pb2, proxy_service_pb2, query_service_pb2, query_service_pb2_grpc
from tests.support.commands import CliRunner, Lines
from tests.support.grpcurl import GRPCURL, grpcurl
from tests.support.ingest_helpers import LEADER_ELECTED
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.serve_process import ServeProcess

QUERY = "protoevents.v1.EventQueryService"
PROXY = "protoevents.v1.EventProxyService"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One `protoevents serve` for the module's tests."""
    served = ServeProcess(tmp_path_factory.mktemp("proxy"), "--writer-batch-interval-ms", "20")
    yield served
    served.stop(signal.SIGTERM)


def record_json(
    message: str, severity: str = "SEVERITY_WARNING", type_name: str = LEADER_ELECTED
) -> tuple[str, str]:
    """(id, RecordBatch request as JSON) of one event, as a user would type it."""
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    request = {
        "events": [
            {
                "id": event_id,
                "type": type_name,
                "severity": severity,
                "message": message,
                "source": {"node": "node-7", "component": "grpcurl"},
                "time": now,
            }
        ]
    }
    return event_id, json.dumps(request)


def stored(proxy: ServeProcess, text: str) -> int:
    """How many stored events have `text` in their message."""
    stub = query_service_pb2_grpc.EventQueryServiceStub(proxy.channel)
    request = query_service_pb2.ListEventsRequest(
        filter=query_service_pb2.EventFilter(message_contains=text), page_size=1000
    )
    return len(stub.ListEvents(request, timeout=30).events)


def test_a_grpcurl_session_lists_describes_calls_and_streams(proxy: ServeProcess) -> None:
    address = proxy.address
    services = grpcurl(address, "list").split()
    assert services == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "protoevents.v1.EventForwardService",
        PROXY,
        QUERY,
    ]
    described = grpcurl(address, "describe", QUERY)
    assert "// Reads stored events and the event-type registry." in described
    assert "rpc WatchEvents ( .protoevents.v1.WatchEventsRequest ) returns ( stream" in described
    # Every message of the services' files, with its comment.
    for module in (query_service_pb2, proxy_service_pb2, event_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            text = grpcurl(address, "describe", message.full_name)
            assert f"{message.full_name} is a message:\n//" in text, text
    assert "// Lowest severity to include." in grpcurl(
        address, "describe", "protoevents.v1.EventFilter"
    )

    types = json.loads(grpcurl(address, f"{QUERY}/ListEventTypes"))
    assert LEADER_ELECTED in [t["name"] for t in types["eventTypes"]]
    network = json.loads(grpcurl(address, f"{QUERY}/ListEventTypes", data='{"category":"network"}'))
    assert {t["category"] for t in network["eventTypes"]} == {"network"}

    event_id, request = record_json("recorded through grpcurl")
    result = json.loads(grpcurl(address, f"{PROXY}/RecordBatch", data=request))
    assert result["result"]["acceptedCount"] == 1

    listing = json.dumps({"filter": {"minSeverity": "SEVERITY_WARNING", "node": "node-7"}})

    def listed() -> bool:
        found = json.loads(grpcurl(address, f"{QUERY}/ListEvents", data=listing))
        return event_id in [e["id"] for e in found.get("events", [])]

    eventually(listed)
    got = json.loads(grpcurl(address, f"{QUERY}/GetEvent", data=json.dumps({"id": event_id})))
    assert got["event"]["message"] == "recorded through grpcurl"

    watch = json.dumps({"filter": {"node": "node-7"}, "replayCount": 1})
    streaming = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", watch, address, f"{QUERY}/WatchEvents"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        output = Lines(streaming)
        assert '"kind": "CHANGE_KIND_REPLAYED"' in output.until(event_id)
        live_id, request = record_json("live through grpcurl")
        grpcurl(address, f"{PROXY}/RecordBatch", data=request)
        text = output.until(live_id)
        assert '"kind": "CHANGE_KIND_CREATED"' in text.split(event_id, 1)[1]
    finally:
        streaming.terminate()
        streaming.wait(timeout=30)

    refused = subprocess.run(
        [GRPCURL, "-plaintext", "-d", '{"pageSize": -1}', address, f"{QUERY}/ListEvents"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "Code: InvalidArgument" in refused.stderr
    assert "page_size: -1 is negative" in refused.stderr


def test_grpcurl_records_by_value_name_and_sees_repeats_merged(proxy: ServeProcess) -> None:
    address = proxy.address
    value_name = LEADER_ELECTED.rsplit(".", 1)[1]
    first_id, request = record_json("by value name", type_name=value_name)
    first = json.loads(grpcurl(address, f"{PROXY}/RecordBatch", data=request))["result"]
    assert (first["acceptedCount"], first.get("merges")) == (1, None), first
    repeat_id, request = record_json("by value name", type_name=value_name)
    repeat = json.loads(grpcurl(address, f"{PROXY}/RecordBatch", data=request))["result"]
    assert repeat == {"acceptedCount": 1, "merges": [{"intoEventId": first_id, "indexes": [0]}]}

    def counted() -> bool:
        got = grpcurl(address, f"{QUERY}/GetEvent", data=json.dumps({"id": first_id}))
        return json.loads(got)["event"].get("count") == "2"

    eventually(counted)
    got = json.loads(grpcurl(address, f"{QUERY}/GetEvent", data=json.dumps({"id": first_id})))
    assert got["event"]["type"] == LEADER_ELECTED  # stored under its qualified name
    missing = subprocess.run(
        [GRPCURL, "-plaintext", "-d", json.dumps({"id": repeat_id}), address, f"{QUERY}/GetEvent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Code: NotFound" in missing.stderr
    assert "merged into an earlier one as a repeat" in missing.stderr


def test_reflection_v1_answers_like_v1alpha_with_comments(proxy: ServeProcess) -> None:
    """grpcurl of this version speaks v1alpha; newer clients ask v1 first."""
    with grpc.insecure_channel(proxy.address) as channel:
        for service in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = channel.stream_stream(
                f"/{service}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=QUERY),
            ]
            listed, found = list(call(iter(requests), timeout=30))
            assert QUERY in [s.name for s in listed.list_services_response.service]
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(blob)
                for blob in found.file_descriptor_response.file_descriptor_proto
            ]
            query_file = next(f for f in files if f.name == "protoevents/v1/query_service.proto")
            comments = [loc.leading_comments for loc in query_file.source_code_info.location]
            assert " Reads stored events and the event-type registry.\n" in comments


def test_query_prints_a_table_or_json_lines(proxy: ServeProcess, run_cli: CliRunner) -> None:
    ids = []
    for n in range(3):
        event_id, request = record_json(f"cli event {n}", severity="SEVERITY_ERROR")
        grpcurl(proxy.address, f"{PROXY}/RecordBatch", data=request)
        ids.append(event_id)

    eventually(lambda: stored(proxy, "cli event") == 3)
    table = run_cli("query", "--proxy", proxy.address, "--contains", "cli event", "--limit", "2")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TIME", "SEVERITY", "TYPE", "COUNT", "SOURCE", "OBJECT", "MESSAGE"]
    assert len(rows) == 2
    assert rows[0].split()[1:5] == [
        "ERROR",
        "CLUSTER_EVENT_TYPE_LEADER_ELECTED",
        "1",
        "node-7/grpcurl",
    ]
    assert rows[0].endswith("cli event 2") and rows[1].endswith("cli event 1")
    lines = run_cli(
        "query",
        *("--proxy", proxy.address, "--contains", "cli event", "--json"),
        *("--oldest-first", "--min-severity", "error", "--node", "node-7", "--since", "1h"),
    ).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
    none = run_cli("query", "--proxy", proxy.address, "--contains", "cli", "--until", "2000-01-01")
    assert none.stdout.splitlines()[1:] == []


def test_query_and_tail_report_bad_filters_and_unreachable_proxies_in_one_line(
    proxy: ServeProcess, run_cli: CliRunner
) -> None:
    cases = [
        (["query", "--proxy", proxy.address, "--type", "NOPE"], "filter.types[0]: unknown"),
        (["query", "--proxy", proxy.address, "--min-severity", "loud"], "--min-severity"),
        (["tail", "--proxy", proxy.address, "--since", "yesterday"], "--since 'yesterday'"),
        (["query", "--proxy", "127.0.0.1:1"], "cannot reach the proxy at 127.0.0.1:1"),
        (["tail", "--proxy", "127.0.0.1:1", "--connect-timeout", "1"], "cannot reach the proxy"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:  # the commands run side by side
        results = list(pool.map(lambda case: run_cli(*case[0]), cases))
    for (args, says), done in zip(cases, results, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert says in done.stderr


def test_tail_follows_new_events_and_exits_cleanly_on_ctrl_c(proxy: ServeProcess) -> None:
    first_id, request = record_json("tail before")
    grpcurl(proxy.address, f"{PROXY}/RecordBatch", data=request)
    tail = subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "protoevents.proxy.cli",
                "tail",
                "--proxy",
                proxy.address,
                "-n",
                "1",
            ),
            *("--node", "node-7", "--contains", "tail ", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        output = Lines(tail)
        output.until(first_id)  # replayed (or live, if it was stored just now)
        live_id, request = record_json("tail live")
        grpcurl(proxy.address, f"{PROXY}/RecordBatch", data=request)
        output.until(live_id)
        changes = [json.loads(line) for line in output.text.splitlines()]
        assert [c["event"]["id"] for c in changes] == [first_id, live_id]
        assert changes[1]["kind"] == "CREATED"
        assert changes[1]["event"]["message"] == "tail live"
    finally:
        tail.send_signal(signal.SIGINT)
        _, errors = tail.communicate(timeout=30)
    assert tail.returncode == 130
    assert errors == ""


def test_types_refuses_an_unknown_category_or_service_naming_the_known(run_cli: CliRunner) -> None:
    for option in ("--category", "--service"):
        refused = run_cli("types", option, "nosuch")
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"protoevents types: {option} 'nosuch' is not one of")
        assert "cluster" in refused.stderr  # a known one, named
    assert run_cli("types", "--category", "cluster").returncode == 0


def test_json_output_shows_whole_numbers_of_data_as_integers() -> None:
    data = struct_pb2.Struct()
    data.update({"votes": 3, "ratio": 2.5, "nested": [1, {"big": 2**53}], "ok": True})
    shown = event_json(event_pb2.Event(id="x", data=data))
    assert shown["data"] == {"votes": 3, "ratio": 2.5, "nested": [1, {"big": 2**53}], "ok": True}
    assert json.dumps(shown["data"]["votes"]) == "3"


def test_human_output_escapes_what_would_act_on_a_terminal_and_json_stays_exact() -> None:
    hostile = "red \x1b[31malert\r overwritten \u202eevil\x07 é"
    event = event_pb2.Event(
        id="x", type="a.B.C", message=hostile, source=event_pb2.EventSource(node="n\x1b]0;t\x07")
    )
    cells = event_cells(event)
    shown = " ".join(cells)
    assert not any(c in shown for c in "\x1b\r\x07\u202e")
    assert cells[-1] == "red \\x1b[31malert\\r overwritten \\u202eevil\\x07 é"
    assert cells[4] == "n\\x1b]0;t\\x07/"
    assert event_json(event)["message"] == hostile  # JSON output is exact
