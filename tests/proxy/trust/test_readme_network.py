"""The TLS part of the README's "On a network" section runs as written: its openssl commands
make the CA and the certificates, its config serves mTLS, its record, query and grpcurl
commands and its recorder example go through, and the refusal it shows is the one `serve` prints.

Only what a reader substitutes is substituted: the proxy's port (the config's listen address
with port 0, by PROTOEVENTS_LISTEN) and its host name (127.0.0.1, which the certificate names
too, for proxy.example, which no resolver knows)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import run_python
from tests.support.polling import eventually
from tests.support.readme import ReaderShell, network_part, shell_commands

BIN = Path(sys.executable).parent
TIMEOUT = 60
HOST = "proxy.example:50051"


class Reader(ReaderShell):
    """A reader's shell in a folder of their own, with the README's exports kept."""

    def __init__(self, tmp_path: Path) -> None:
        cwd = tmp_path / "work"
        cwd.mkdir()
        (tmp_path / "home").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOEVENTS_")}
        env.update(HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        super().__init__(cwd, env)
        self.exports: list[str] = []
        self.address = HOST

    def shell(self, command: str) -> list[str]:
        lines = [*self.exports, command]
        return ["bash", "-c", "\n".join(lines).replace(HOST, self.address)]


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    yield Reader(tmp_path)


def block(text: str, language: str, first_line: str = "") -> str:
    found = re.search(rf"```{language}\n({re.escape(first_line)}.*?)```", text, re.S)
    assert found is not None, f"no {language} block starting {first_line!r}"
    return found[1]


def check_output(reader: Reader, command: str) -> None:
    """Each kind of command of the section works and prints what it should."""
    done = reader.run(command)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    if command.startswith("protoevents record"):
        uuid.UUID(done.stdout.strip())
    elif command.startswith("protoevents query"):  # stored within the writers' 200 ms
        eventually(lambda: "node-7 is the leader" in reader.run(command).stdout)
    elif command.endswith(" list"):
        assert "protoevents.v1.EventProxyService" in done.stdout.split()
    elif " describe " in command:
        assert "service EventQueryService {" in done.stdout


def test_the_network_section_runs_as_written(reader: Reader) -> None:
    text = network_part()
    (reader.cwd / "proxy-tls.toml").write_text(block(text, "toml", "# proxy-tls.toml"))
    commands = shell_commands(text)
    assert sum(c.startswith("openssl ") for c in commands) == 5, commands
    serving: subprocess.Popen[str] | None = None
    try:
        for command in commands:
            if command.startswith("protoevents serve"):
                serving = reader.start(command, PROTOEVENTS_LISTEN="0.0.0.0:0")
                assert serving.stdout is not None
                first = serving.stdout.readline()
                assert first.startswith("listening on 0.0.0.0:"), serving.stderr
                reader.address = "127.0.0.1:" + first.rpartition(":")[2].strip()
            elif command.startswith("export "):
                reader.exports.append(command)
            else:
                check_output(reader, command)
        assert serving is not None
        run_the_recorder_example(reader, text)
        refused_without_a_certificate(reader)
    finally:
        if serving is not None:
            serving.send_signal(signal.SIGTERM)
            _, errors = serving.communicate(timeout=TIMEOUT)
    assert serving.returncode == 0, errors
    assert "with TLS, client certificates required (mTLS)" in errors


def run_the_recorder_example(reader: Reader, text: str) -> None:
    code = block(text, "python").replace(HOST, reader.address)
    done = run_python("-c", code, cwd=reader.cwd, env=reader.env)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    query = "protoevents query --json --contains 'node-7 leads'"
    eventually(lambda: event_id in reader.run(query).stdout)


def refused_without_a_certificate(reader: Reader) -> None:
    done = reader.run("protoevents query --client-cert '' --client-key '' --ca-file ca.pem")
    assert done.returncode == 2
    assert "cannot reach the proxy" in done.stderr


def test_the_refusal_the_section_shows_is_the_one_serve_prints(reader: Reader) -> None:
    shown = block(network_part(), "text").strip()
    done = reader.run("protoevents serve --listen 0.0.0.0:50051")
    assert done.returncode == 2
    assert done.stderr.strip() == shown
