"""`[[writers]]` in the config file: typed configs, defaults, and refusals naming the key."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import trustme

from protoevents.proxy import config
from protoevents.proxy.config import SettingsError
from protoevents.proxy.writers.filters import WriterFilter
from protoevents.proxy.writers.jsonl import JsonlOptions
from protoevents.proxy.writers.kinds import KINDS
from protoevents.proxy.writers.redis import RedisOptions
from protoevents.proxy.writers.settings import (
    WriterConfig,
    check_types,
    effective_writers,
    parse_writer,
)
from protoevents.proxy.writers.sql import SqlOptions
from protoevents.proxy.writers.syslog import SyslogOptions
from protoevents.recorder.registry import Registry
from protoevents.v1 import severity_pb2
from tests.support.commands import CliRunner
from tests.support.paths import ROOT


def load(tmp_path: Path, text: str) -> config.Settings:
    file = tmp_path / "proxy.toml"
    file.write_text(text)
    return config.from_sources(file, environ={})


def test_several_writers_of_each_kind_with_filters(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        [[writers]]
        name = "db"
        kind = "sql"

        [[writers]]
        name = "alerts"
        kind = "syslog"
        transport = "tcp"
        address = "127.0.0.1:6514"
        facility = "local3"
        min_severity = "warning"

        [[writers]]
        name = "audit"
        kind = "syslog"
        format = "rfc3164"
        address = "[::1]"
        facility = 4
        categories = ["network"]
        types = ["CLUSTER_EVENT_TYPE_LEADER_LOST"]

        [[writers]]
        name = "recent"
        kind = "redis"
        url = "redis://127.0.0.1:6379/2"
        recent_max = 50
        publish = false

        [[writers]]
        kind = "jsonl"
        path = "changes.jsonl"
        """,
    )
    assert settings.writers == (
        WriterConfig("db", SqlOptions()),
        WriterConfig(
            "alerts",
            SyslogOptions(address="127.0.0.1:6514", transport="tcp", facility="local3"),
            WriterFilter(min_severity=severity_pb2.SEVERITY_WARNING),
        ),
        WriterConfig(
            "audit",
            SyslogOptions(address="[::1]", format="rfc3164", facility="4"),
            WriterFilter(
                categories=frozenset({"network"}),
                types=frozenset({"CLUSTER_EVENT_TYPE_LEADER_LOST"}),
            ),
        ),
        WriterConfig(
            "recent",
            RedisOptions(url="redis://127.0.0.1:6379/2", recent_max=50, publish=False),
        ),
        WriterConfig("jsonl", JsonlOptions(Path("changes.jsonl"))),
    )
    alerts, audit = settings.writers[1].options, settings.writers[2].options
    assert isinstance(alerts, SyslogOptions) and isinstance(audit, SyslogOptions)
    assert (alerts.host_port, alerts.facility_code) == (("127.0.0.1", 6514), 19)
    assert (audit.host_port, audit.facility_code) == (("::1", 514), 4)
    assert [c.kind for c in settings.writers] == ["sql", "syslog", "syslog", "redis", "jsonl"]


def test_without_writers_the_proxy_writes_to_sql_and_jsonl_when_given_a_path() -> None:
    assert effective_writers((), None) == [WriterConfig("sql", SqlOptions())]
    assert [c.name for c in effective_writers((), Path("x.jsonl"))] == ["sql", "jsonl"]
    redis_only = (WriterConfig("recent", RedisOptions()),)
    assert [c.name for c in effective_writers(redis_only, Path("x"))] == ["recent", "jsonl"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "kafka"', "writers[0]: kind = 'kafka': expected one of sql, jsonl, syslog, redis"),
        ('kind = "sql"\nname = "a b"', "writers[0] ('a b'): name = 'a b': expected letters"),
        ('kind = "syslog"', "writers[0]: address = None: required for a syslog writer"),
        (
            'kind = "syslog"\naddress = "h"\ntransport = "sctp"',
            "writers[0]: transport = 'sctp': expected udp, tcp or tls",
        ),
        ('kind = "syslog"\naddress = "h:99999"', "address = 'h:99999': expected HOST:PORT"),
        ('kind = "syslog"\naddress = "h"\nfacility = "local9"', "facility = 'local9': expected"),
        ('kind = "syslog"\naddress = "h"\nfromat = "rfc5424"', "fromat = 'rfc5424': unknown key"),
        ('kind = "syslog"\naddress = "h"\nmax_datagram_bytes = 100', "must be at least 480"),
        (
            'kind = "syslog"\naddress = "h"\ntls_ca_file = "ca.pem"',
            "tls_ca_file = 'ca.pem': only used with transport tls",
        ),
        (
            'kind = "syslog"\naddress = "h"\ntransport = "tls"\ntls_ca_file = "missing.pem"',
            "tls_ca_file = 'missing.pem': [Errno 2]",
        ),
        ('kind = "syslog"\naddress = "h"\nmin_severity = "loud"', "unknown severity 'loud'"),
        ('kind = "redis"\nurl = "http://x"', "url = 'http://x': expected a redis://"),
        ('kind = "redis"\nrecent_max = 0', "recent_max = 0: must be greater than 0"),
        ('kind = "redis"\npublish = "yes"', "publish = 'yes': expected true or false"),
        ('kind = "redis"\ncategories = "network"', "categories = 'network': expected a list"),
        ('kind = "jsonl"', "path = None: required for a jsonl writer"),
    ],
)
def test_a_bad_writer_is_refused_naming_the_writer_and_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, f"[[writers]]\n{table}\n")
    assert message in str(caught.value)
    assert "proxy.toml" in str(caught.value)


def test_writer_names_must_be_unique_also_with_the_jsonl_flag(tmp_path: Path) -> None:
    twice = '[[writers]]\nkind = "sql"\n[[writers]]\nkind = "sql"\n'
    with pytest.raises(SettingsError, match="two writers are named 'sql'"):
        load(tmp_path, twice)
    file = tmp_path / "jsonl.toml"
    file.write_text('[[writers]]\nkind = "jsonl"\npath = "a.jsonl"\n')
    with pytest.raises(SettingsError, match="two writers are named 'jsonl'"):
        config.from_sources(file, environ={}, overrides={"jsonl_path": "b.jsonl"})


def test_filter_types_must_be_known_event_types() -> None:
    registry = Registry.builtin()
    fine = WriterConfig("w", SqlOptions(), WriterFilter(types=frozenset({"LEADER_LOST"})))
    with pytest.raises(ValueError, match="writer 'w': types: unknown event type 'LEADER_LOST'"):
        check_types([fine], registry)
    known = WriterFilter(types=frozenset({"CLUSTER_EVENT_TYPE_LEADER_LOST"}))
    check_types([WriterConfig("w", SqlOptions(), known)], registry)


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```toml\n(# proxy\.toml.*?)```", readme, re.DOTALL)
    assert example is not None
    ca_file = tmp_path / "collector-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # the TLS writer reads it at start
    text = example.group(1).replace("/etc/protoevents/collector-ca.pem", str(ca_file))
    settings = load(tmp_path, text)
    check_types(settings.writers, Registry.builtin())
    assert {c.kind for c in settings.writers} == {"sql", "syslog", "redis", "jsonl"}


def test_serve_refuses_a_bad_writer_with_exit_2(tmp_path: Path, run_cli: CliRunner) -> None:
    file = tmp_path / "proxy.toml"
    file.write_text('[[writers]]\nname = "alerts"\nkind = "syslog"\naddress = "h"\nport = 1\n')
    result = run_cli("serve", "--config", str(file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "writers[0] ('alerts'): port = 1: unknown key for a syslog writer" in result.stderr
    assert "Traceback" not in result.stderr

    file.write_text('[[writers]]\nkind = "sql"\ntypes = ["NO_SUCH_TYPE"]\n')
    result = run_cli("serve", "--config", str(file), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "writer 'sql': types: unknown event type 'NO_SUCH_TYPE'" in result.stderr


def test_every_kind_names_its_options_and_builder_in_its_own_module() -> None:
    for kind in KINDS.values():
        assert kind.options.__module__ == kind.module
        assert kind.build.__module__ == kind.module
        assert "kind" not in {f.name for f in fields(kind.options)}
    assert WriterConfig("db", SqlOptions()).kind == "sql"
    assert parse_writer({"kind": "jsonl", "path": "x.jsonl"}).kind == "jsonl"
    assert [kind for kind in KINDS if KINDS[kind].options.uses_database] == ["sql"]
