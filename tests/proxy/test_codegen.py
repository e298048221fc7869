"""`protoevents gen` and `protoevents types` on the built-in protos and on a user's own."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from protoevents.v1 import severity_pb2
from tests.support.commands import CliRunner
from tests.support.fake_proxy import FakeProxy
from tests.support.paths import ROOT, copy_generated
from tests.support.user_protos import GOOD_OPTIONS, WIDGET_PROTO, write_user_protos

SPLIT_BRAIN = textwrap.dedent(
    """\
      // The cluster split into partitions that cannot see each other.
      CLUSTER_EVENT_TYPE_SPLIT_BRAIN = 7 [(protoevents.v1.event) = {
        severity: SEVERITY_CRITICAL
        category: "cluster"
        description: "The cluster split into partitions that cannot see each other."
      }];
    }
    """
)


def test_generated_code_is_in_sync_with_protos(run_cli: CliRunner) -> None:
    result = run_cli("gen", "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_names_stale_missing_and_extra_files(run_cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "generated"
    copy_generated(out)
    stale = out / "protoevents" / "v1" / "event_pb2.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    (out / "protoevents" / "v1" / "severity_pb2.pyi").unlink()
    (out / "protoevents" / "v1" / "removed_pb2.py").write_text("")
    (out / "protoevents" / "descriptors.binpb").write_bytes(b"")

    result = run_cli("gen", "--check", "--out", str(out))

    assert result.returncode == 1
    assert "out of date: protoevents/v1/event_pb2.py" in result.stderr
    assert "out of date: protoevents/descriptors.binpb" in result.stderr
    assert "missing: protoevents/v1/severity_pb2.pyi" in result.stderr
    assert "not produced by the protos: protoevents/v1/removed_pb2.py" in result.stderr


def test_gen_replaces_generated_files_and_keeps_others(run_cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "generated"
    copy_generated(out)
    (out / "protoevents" / "v1" / "removed_pb2.py").write_text("")
    (out / "NOTES.txt").write_text("mine")

    assert run_cli("gen", "--out", str(out)).returncode == 0

    assert run_cli("gen", "--check", "--out", str(out)).returncode == 0
    assert not (out / "protoevents" / "v1" / "removed_pb2.py").exists()
    assert (out / "NOTES.txt").read_text() == "mine"
    # The links that install the hand-written folders inside `protoevents` are not its output.
    for link, folder in (
        ("proxy", "server"),
        ("recorder", "recorder"),
        ("migrations", "migrations"),
    ):
        assert (out / "protoevents" / link).resolve() == ROOT / folder


def test_the_descriptor_set_is_byte_stable_and_holds_the_comments_and_imports(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """gen --check compares it byte for byte: from protos elsewhere, run twice, it is the same."""
    protos = tmp_path / "elsewhere" / "protos"
    shutil.copytree(ROOT / "protos", protos)
    out = tmp_path / "generated"
    for changed in ("files changed", "(0 files changed)"):
        generated = run_cli("gen", "--protos", str(protos), "--out", str(out))
        assert generated.returncode == 0, generated.stderr
        assert changed in generated.stdout
    blob = (out / "protoevents" / "descriptors.binpb").read_bytes()
    assert blob == (ROOT / "generated" / "protoevents" / "descriptors.binpb").read_bytes()
    assert str(tmp_path).encode() not in blob

    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(blob).file}
    protos_files = {p.relative_to(protos).as_posix() for p in protos.rglob("*.proto")}
    assert set(files) == protos_files | {
        "google/protobuf/descriptor.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
    }
    query = files["protoevents/v1/query_service.proto"]
    comments = [loc.leading_comments for loc in query.source_code_info.location]
    assert " Reads stored events and the event-type registry.\n" in comments


def test_user_protos_generate_and_load_into_the_registry(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    protos = write_user_protos(tmp_path)
    out = tmp_path / "gen"

    generated = run_cli("gen", "--protos", str(protos), "--out", str(out))
    assert generated.returncode == 0, generated.stderr
    assert (out / "acme" / "widgets" / "v1" / "widget_events_pb2.pyi").is_file()
    assert not (out / "protoevents").exists(), "the protoevents protos are imported, not copied"
    descriptors = (out / "acme" / "descriptors.binpb").read_bytes()
    names = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(descriptors).file]
    assert {"acme/widgets/v1/widget_events.proto", "protoevents/v1/options.proto"} <= set(names)

    listed = run_cli(
        "types", "--json", "--module", "acme.widgets.v1.widget_events_pb2", pythonpath=[out]
    )
    assert listed.returncode == 0, listed.stderr
    widget = [t for t in json.loads(listed.stdout) if t["service"] == "widgets"]
    assert widget == [
        {
            "name": "acme.widgets.v1.WidgetEventType.WIDGET_EVENT_TYPE_JAMMED",
            "number": 1,
            "severity": "ERROR",
            "category": "widget",
            "description": "A widget jammed.",
            "service": "widgets",
            "enum": "acme.widgets.v1.WidgetEventType",
        }
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('    category: "widget"\n    description: "d"', "no severity declared"),
        ('    severity: SEVERITY_INFO\n    description: "d"', "category '' must be"),
        ('    severity: SEVERITY_INFO\n    category: "widget"', "no description declared"),
    ],
)
def test_incomplete_declarations_are_named(
    run_cli: CliRunner, tmp_path: Path, options: str, message: str
) -> None:
    protos = write_user_protos(tmp_path, options)
    out = tmp_path / "gen"
    assert run_cli("gen", "--protos", str(protos), "--out", str(out)).returncode == 0

    listed = run_cli("types", "--module", "acme.widgets.v1.widget_events_pb2", pythonpath=[out])

    assert listed.returncode == 2
    assert "acme.widgets.v1.WidgetEventType.WIDGET_EVENT_TYPE_JAMMED" in listed.stderr
    assert message in listed.stderr


def test_annotated_zero_value_and_unannotated_value_are_refused(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    protos = write_user_protos(tmp_path)
    proto = protos / "acme" / "widgets" / "v1" / "widget_events.proto"
    text = proto.read_text().replace(
        "WIDGET_EVENT_TYPE_UNSPECIFIED = 0;",
        "WIDGET_EVENT_TYPE_UNSPECIFIED = 0 [(protoevents.v1.event) = {severity: SEVERITY_INFO}];",
    )
    proto.write_text(text)
    out = tmp_path / "gen"
    assert run_cli("gen", "--protos", str(protos), "--out", str(out)).returncode == 0
    listed = run_cli("types", "--module", "acme.widgets.v1.widget_events_pb2", pythonpath=[out])
    assert listed.returncode == 2
    assert "WIDGET_EVENT_TYPE_UNSPECIFIED: the zero value cannot be an event type" in listed.stderr

    proto.write_text(
        (WIDGET_PROTO % GOOD_OPTIONS).replace(
            "}\n", "  // Forgotten.\n  WIDGET_EVENT_TYPE_BARE = 2;\n}\n"
        )
    )
    assert run_cli("gen", "--protos", str(protos), "--out", str(out)).returncode == 0
    listed = run_cli("types", "--module", "acme.widgets.v1.widget_events_pb2", pythonpath=[out])
    assert listed.returncode == 2
    assert "WIDGET_EVENT_TYPE_BARE: event-type enum value has no (protoevents.v1.event)" in (
        listed.stderr
    )


def test_protoc_errors_fail_the_command(run_cli: CliRunner, tmp_path: Path) -> None:
    protos = write_user_protos(tmp_path)
    (protos / "acme" / "widgets" / "v1" / "widget_events.proto").write_text("syntax = nonsense")
    result = run_cli("gen", "--protos", str(protos), "--out", str(tmp_path / "gen"))
    assert result.returncode == 1
    assert "protoc failed" in result.stderr


def _copies_with_split_brain(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of protos/ and generated/ in `tmp_path`, the cluster enum given SPLIT_BRAIN
    in the protos only (generated/ is stale until `gen`)."""
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    out = tmp_path / "generated"
    copy_generated(out)
    cluster = protos / "protoevents" / "cluster" / "v1" / "cluster_events.proto"
    text = cluster.read_text()
    cluster.write_text(text[: text.rindex("}")] + SPLIT_BRAIN)
    return protos, out


def test_adding_an_event_type_round_trip(run_cli: CliRunner, tmp_path: Path) -> None:
    """The README's walk-through: edit a .proto, regenerate, the type is listed."""
    protos, out = _copies_with_split_brain(tmp_path)

    assert run_cli("gen", "--check", "--protos", str(protos), "--out", str(out)).returncode == 1
    assert run_cli("gen", "--protos", str(protos), "--out", str(out)).returncode == 0

    listed = run_cli("types", "--json", "--service", "cluster", pythonpath=[out])
    assert listed.returncode == 0, listed.stderr
    added = [t for t in json.loads(listed.stdout) if t["number"] == 7]
    assert added == [
        {
            "name": "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_SPLIT_BRAIN",
            "number": 7,
            "severity": "CRITICAL",
            "category": "cluster",
            "description": "The cluster split into partitions that cannot see each other.",
            "service": "cluster",
            "enum": "protoevents.cluster.v1.ClusterEventType",
        }
    ]


def test_added_type_is_accepted_by_a_recorder(
    run_cli: CliRunner, tmp_path: Path, fake_proxy: FakeProxy
) -> None:
    protos, out = _copies_with_split_brain(tmp_path)
    assert run_cli("gen", "--protos", str(protos), "--out", str(out)).returncode == 0

    recorded = run_cli(
        "record", "CLUSTER_EVENT_TYPE_SPLIT_BRAIN", "two leaders", "--component", "c",
        "--proxy", fake_proxy.address, "--spool-dir", str(tmp_path / "spool"),
        pythonpath=[out],
    )  # fmt: skip

    assert recorded.returncode == 0, recorded.stderr
    event = fake_proxy.events[recorded.stdout.strip()]
    assert event.type == "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_SPLIT_BRAIN"
    assert event.severity == severity_pb2.SEVERITY_CRITICAL


def test_types_table_and_filters(run_cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    # One line per type (tests/cli/test_types_table.py: narrower).
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli("types", "--category", "network")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SEVERITY", "CATEGORY", "SERVICE", "DESCRIPTION"]
    assert len(lines) == 6
    assert all(" network " in line for line in lines[1:])
