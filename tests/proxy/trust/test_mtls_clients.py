"""A real `serve` requiring client certificates: grpcurl with its TLS flags lists, describes
and calls; every command that dials it (record, query, tail, spool replay) speaks mTLS from
its flags or the PROTOEVENTS_* variables, and says in one line when it is refused."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from tests.support.commands import Lines, run_python
from tests.support.grpcurl import grpcurl, grpcurl_run
from tests.support.paths import ROOT
from tests.support.pki import Pki
from tests.support.polling import eventually
from tests.support.serve_process import ServeProcess

LOST = "CLUSTER_EVENT_TYPE_LEADER_LOST"
LEADER_LOST = f"protoevents.cluster.v1.ClusterEventType.{LOST}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def proxy(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    serving = ServeProcess(
        tmp_path_factory.mktemp("mtls-serve"),
        "--tls-cert-file", str(pki.cert_file),
        "--tls-key-file", str(pki.key_file),
        "--tls-client-ca-file", str(pki.ca_file),
    )  # fmt: skip
    yield serving
    assert serving.stop(signal.SIGTERM) == 0


class Cli:
    """`protoevents` with the TLS variables set to the component's certificates."""

    def __init__(self, proxy: ServeProcess, pki: Pki, home: Path) -> None:
        self.env = {
            **os.environ,
            "HOME": str(home),
            "PROTOEVENTS_PROXY": proxy.address,
            "PROTOEVENTS_CA_FILE": str(pki.ca_file),
            "PROTOEVENTS_CLIENT_CERT": str(pki.client_cert),
            "PROTOEVENTS_CLIENT_KEY": str(pki.client_key),
        }

    def environ(self, changes: dict[str, str | None]) -> dict[str, str]:
        return {k: v for k, v in {**self.env, **changes}.items() if v is not None}

    def run(self, *args: str, **changes: str | None) -> subprocess.CompletedProcess[str]:
        return run_python("-m", "protoevents.proxy.cli", *args, env=self.environ(changes))

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "protoevents.proxy.cli", *args],
            env=self.environ({}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )


@pytest.fixture
def cli(proxy: ServeProcess, pki: Pki, tmp_path: Path) -> Cli:
    return Cli(proxy, pki, tmp_path / "home")


def grpcurl_tls(pki: Pki, *, certificate: bool = True) -> list[str]:
    client = ["-cert", str(pki.client_cert), "-key", str(pki.client_key)] if certificate else []
    return ["-cacert", str(pki.ca_file), *client]


def test_grpcurl_with_its_tls_flags_lists_describes_and_calls(
    proxy: ServeProcess, pki: Pki
) -> None:
    tls = grpcurl_tls(pki)
    services = grpcurl(proxy.address, "list", tls=tls).split()
    assert "protoevents.v1.EventProxyService" in services
    assert "protoevents.v1.EventQueryService" in services
    described = grpcurl(proxy.address, "describe", "protoevents.v1.EventFilter", tls=tls)
    assert "message EventFilter {" in described
    event_id = str(uuid.uuid4())
    batch = {
        "events": [{"id": event_id, "type": LEADER_LOST, "message": "node-7 went away",
                    "source": {"node": "node-7", "component": "controller"},
                    "time": "2026-01-01T00:00:00Z"}]
    }  # fmt: skip
    method = "protoevents.v1.EventProxyService/RecordBatch"
    answer = grpcurl(proxy.address, method, data=json.dumps(batch), tls=tls)
    assert json.loads(answer)["result"]["acceptedCount"] == 1
    eventually(lambda: event_id in proxy.written_ids())

    for refused in (grpcurl_tls(pki, certificate=False), None):  # no certificate; plaintext
        done = grpcurl_run(proxy.address, "list", tls=refused)
        assert done.returncode != 0, done.stdout


def test_record_and_query_speak_mtls_by_variables_and_flags(
    proxy: ServeProcess, pki: Pki, cli: Cli
) -> None:
    component = f"c-{uuid.uuid4().hex[:8]}"
    recorded = cli.run("record", LOST, "over mTLS", "--component", component)
    assert recorded.returncode == 0 and recorded.stderr == "", recorded.stderr
    event_id = recorded.stdout.strip()
    eventually(lambda: event_id in proxy.written_ids())

    by_flags = cli.run(
        "query", "--json", "--component", component,
        "--ca-file", str(pki.ca_file),
        "--client-cert", str(pki.client_cert),
        "--client-key", str(pki.client_key),
        PROTOEVENTS_CA_FILE=None, PROTOEVENTS_CLIENT_CERT=None, PROTOEVENTS_CLIENT_KEY=None,
    )  # fmt: skip
    assert by_flags.returncode == 0, by_flags.stderr
    assert [json.loads(line)["id"] for line in by_flags.stdout.splitlines()] == [event_id]


def test_a_refused_command_says_so_in_one_line(
    proxy: ServeProcess, cli: Cli, tmp_path: Path
) -> None:
    uncertified = cli.run("query", PROTOEVENTS_CLIENT_CERT=None, PROTOEVENTS_CLIENT_KEY=None)
    assert uncertified.returncode == 2
    assert uncertified.stderr.startswith(
        f"protoevents query: cannot reach the proxy at {proxy.address}: "
    )
    assert len(uncertified.stderr.splitlines()) == 1, uncertified.stderr  # no grpc noise
    missing = tmp_path / "nowhere.pem"
    for command in ("query", "tail", "record"):
        args = [LOST, "m", "--component", "c"] if command == "record" else []
        done = cli.run(command, *args, "--ca-file", str(missing))
        assert done.returncode == 2
        assert done.stderr == (
            f"protoevents {command}: cannot read the CA file {missing}: No such file or directory\n"
        )
    half = cli.run("query", PROTOEVENTS_CLIENT_KEY=None)
    assert half.returncode == 2
    assert half.stderr == (
        "protoevents query: a client certificate needs its key: give both or neither\n"
    )


def test_tail_follows_over_mtls(proxy: ServeProcess, cli: Cli) -> None:
    component = f"c-{uuid.uuid4().hex[:8]}"
    tail = cli.start("tail", "-n", "0", "--component", component)
    lines = Lines(tail)
    try:

        def record_one() -> bool:
            done = cli.run("record", LOST, "followed", "--component", component)
            assert done.returncode == 0, done.stderr
            try:
                lines.until("followed", timeout=2)
            except queue.Empty:  # the watch was not open yet: record another
                return False
            return True

        eventually(record_one)
    finally:
        tail.send_signal(signal.SIGINT)
        _, errors = tail.communicate(timeout=30)
    assert tail.returncode == 130, errors


def test_spool_replay_delivers_over_mtls_what_a_refused_recorder_spooled(
    proxy: ServeProcess, pki: Pki, cli: Cli, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    recorder = Recorder(
        component="gone",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=proxy.address,
        spool_dir=spool,
        tls=pki.client(certificate=False),  # refused: it spools
    )
    lost = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST
    ids = [recorder.record(lost, f"spooled {n}") for n in range(4)]
    assert recorder.flush(30)
    recorder.close(1)
    assert not set(ids) & set(proxy.written_ids())
    (slot,) = (spool / "node-1" / "gone").glob("slot-*")
    done = cli.run("spool", "replay", str(slot), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivered"] == 4
    eventually(lambda: set(ids) <= set(proxy.written_ids()))


def test_a_recorder_takes_its_tls_from_the_variables_when_given_none(
    proxy: ServeProcess, cli: Cli
) -> None:
    script = (
        "from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType\n"
        "from protoevents.recorder import Recorder\n"
        "import os\n"
        "with Recorder(component='env-tls', event_types=[ClusterEventType],\n"
        "              proxy=os.environ['PROTOEVENTS_PROXY'], spool_dir='spool') as events:\n"
        f"    print(events.record(ClusterEventType.{LOST}, 'tls from the environment'))\n"
        "    assert events.drain(30)\n"
    )
    done = run_python("-c", script, cwd=Path(cli.env["HOME"]).parent, env=cli.environ({}))
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    eventually(lambda: event_id in proxy.written_ids())
