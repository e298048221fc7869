"""A proxy with TLS whose certificate chains to a CA the system trusts: `--tls` (or
PROTOEVENTS_TLS=1) is all a command needs. The test's CA stands for the system's, as gRPC's
default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from protoevents.recorder.tls import ClientTLS
from tests.support.commands import run_python
from tests.support.pki import Pki
from tests.support.polling import eventually
from tests.support.serve_process import ServeProcess

LOST = "CLUSTER_EVENT_TYPE_LEADER_LOST"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def proxy(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    serving = ServeProcess(
        tmp_path_factory.mktemp("tls-serve"),
        "--tls-cert-file", str(pki.cert_file),
        "--tls-key-file", str(pki.key_file),
    )  # fmt: skip
    yield serving
    assert serving.stop(signal.SIGTERM) == 0


def cli(proxy: ServeProcess, pki: Pki, *args: str, **env: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROTOEVENTS_")}
    environ.update(GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(pki.ca_file), **env)
    done = run_python("-m", "protoevents.proxy.cli", *args, "--proxy", proxy.address, env=environ)
    return done.returncode, done.stdout, done.stderr


def test_tls_with_the_systems_cas_needs_only_the_switch(proxy: ServeProcess, pki: Pki) -> None:
    code, out, err = cli(proxy, pki, "record", LOST, "over tls", "--component", "c", "--tls")
    assert (code, err) == (0, ""), err
    event_id = out.strip()
    eventually(lambda: event_id in proxy.written_ids())
    code, out, err = cli(proxy, pki, "query", "--json", "--component", "c", PROTOEVENTS_TLS="1")
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [event_id]
    code, _, err = cli(proxy, pki, "query", "--component", "c")  # plaintext to a TLS port
    assert code == 2 and "cannot reach the proxy" in err, err


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"PROTOEVENTS_TLS": "0"}, None),
        ({"PROTOEVENTS_TLS": "1"}, ClientTLS()),
        ({"PROTOEVENTS_TLS": "true", "PROTOEVENTS_SERVER_NAME": "p"}, ClientTLS(server_name="p")),
        ({"PROTOEVENTS_CA_FILE": "ca.pem"}, ClientTLS(ca_file="ca.pem")),
    ],
)
def test_the_variables_say_whether_and_how(
    environ: dict[str, str], expected: ClientTLS | None
) -> None:
    assert ClientTLS.from_environ(environ) == expected
