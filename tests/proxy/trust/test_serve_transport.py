"""A real `serve`: plaintext on an address other than loopback refused unless insecure (then
warned of); a Unix socket beside the port; mTLS through grpcurl and the command line."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from tests.support.commands import CliRunner
from tests.support.pki import Pki
from tests.support.polling import eventually
from tests.support.serve_process import ServeProcess

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LEADER_LOST = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"


def mtls_flags(pki: Pki) -> list[str]:
    return [
        "--tls-cert-file", str(pki.cert_file),
        "--tls-key-file", str(pki.key_file),
        "--tls-client-ca-file", str(pki.ca_file),
    ]  # fmt: skip


def grpcurl_tls(pki: Pki, *, certificate: bool = True) -> list[str]:
    client = ["-cert", str(pki.client_cert), "-key", str(pki.client_key)] if certificate else []
    return ["-cacert", str(pki.ca_file), *client]


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.7:50051", "proxy.lan:50051"])
def test_plaintext_beyond_loopback_is_refused_in_one_line(
    run_cli: CliRunner, tmp_path: Path, listen: str
) -> None:
    done = run_cli("serve", "--listen", listen, "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"protoevents serve: setting listen = {listen!r}: not a loopback address, and TLS is "
        "off: set tls_cert_file and tls_key_file, or insecure (--insecure) to serve plaintext "
        "to the network (from --listen)\n"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_insecure_serves_plaintext_beyond_loopback_and_warns(
    tmp_path: Path, processes: list[ServeProcess], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "environment":
        monkeypatch.setenv("PROTOEVENTS_INSECURE", "true")
    flags = ["--insecure"] if how == "flag" else []
    proxy = ServeProcess(tmp_path, "--listen", "0.0.0.0:0", *flags, follow_log=True)
    processes.append(proxy)
    assert proxy.address.startswith("0.0.0.0:")
    port = proxy.address.rpartition(":")[2]
    ids = proxy_record(f"127.0.0.1:{port}", tmp_path)
    eventually(lambda: set(ids) <= set(proxy.written_ids()))
    assert proxy.stop(signal.SIGTERM) == 0
    warnings = [line for line in proxy.log().splitlines() if "insecure:" in line]
    assert len(warnings) == 1, proxy.log()
    assert "WARNING" in warnings[0] and "serving plaintext gRPC on 0.0.0.0:0" in warnings[0]


def proxy_record(address: str, tmp_path: Path, **options: object) -> list[str]:
    """Record three events to `address` with a recorder of its own; their ids, delivered."""
    with Recorder(
        component=f"c-{uuid.uuid4().hex[:8]}",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=address,
        spool_dir=tmp_path / "spool",
        **options,  # type: ignore[arg-type]
    ) as recorder:
        ids = [recorder.record(ELECTED, f"event {n}") for n in range(3)]
        assert recorder.drain(30), recorder.stats()
        assert recorder.stats().acknowledged == 3
    return ids


def test_a_recorder_on_the_same_host_records_through_the_unix_socket(
    tmp_path: Path, processes: list[ServeProcess], run_cli: CliRunner
) -> None:
    socket_path = tmp_path / "proxy.sock"
    proxy = ServeProcess(tmp_path, "--listen-unix", str(socket_path), follow_log=True)
    processes.append(proxy)
    ids = proxy_record(f"unix:{socket_path}", tmp_path)
    eventually(lambda: set(ids) <= set(proxy.written_ids()))
    done = run_cli("query", "--proxy", f"unix:{socket_path}", "--json")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["id"] for line in done.stdout.splitlines()} == set(ids)
    assert proxy.stop(signal.SIGTERM) == 0
    assert f"and unix:{socket_path}" in proxy.log()


def test_certificate_files_that_cannot_serve_stop_the_start_in_one_line(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    pki = Pki.make(tmp_path / "pki")
    pki.key_file.write_bytes(pki.client_key.read_bytes())  # another's key
    done = run_cli(
        "serve", "--data-dir", str(tmp_path / "data"),
        "--tls-cert-file", str(pki.cert_file), "--tls-key-file", str(pki.key_file),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        f"protoevents serve: tls_key_file {pki.key_file} is not the key of the certificate "
        f"in {pki.cert_file}\n"
    )
