"""`protoevents serve` with an access file, as a process: a bad file keeps it from starting;
`protoevents token` makes what a client and the file need; the commands (record, query,
tail) send the token;
SIGHUP reloads the file and a token taken out of it stops working."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import CliRunner, Lines
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.serve_process import ServeProcess

LEADER_LOST = "CLUSTER_EVENT_TYPE_LEADER_LOST"


def test_serve_refuses_to_start_on_a_bad_access_file(tmp_path: Path) -> None:
    access = tmp_path / "access.toml"
    access.write_text('[[identities]]\nname = "lab"\nroles = ["record", "qurey"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "protoevents.proxy.cli", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--access-file", str(access)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"protoevents serve: {access}:1: identity 'lab': roles: unknown role 'qurey'; "
        "expected some of record, query, watch, forward, admin\n"
    )


def token_pair(run_cli: CliRunner) -> tuple[str, str]:
    """A token and the `tokens = [...]` line `protoevents token` prints for it."""
    made = run_cli("token")
    assert made.returncode == 0, made.stderr
    token, line = made.stdout.splitlines()
    return token, line


def identity(name: str, tokens_line: str) -> str:
    return f'[[identities]]\nname = "{name}"\nroles = ["record", "query", "watch"]\n' \
        f'sources = ["node-7/*"]\n{tokens_line}\n'  # fmt: skip


def test_the_commands_send_the_token_and_sighup_takes_a_removed_one_away(
    tmp_path: Path,
    processes: list[ServeProcess],
    run_cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token, line = token_pair(run_cli)
    other, other_line = token_pair(run_cli)
    assert token != other and len(line) == len('tokens = [""]') + 64
    access = tmp_path / "access.toml"
    access.write_text(identity("ops", line) + identity("spare", other_line))
    proxy = ServeProcess(tmp_path / "data", "--access-file", str(access), follow_log=True)
    processes.append(proxy)
    flags = ("--proxy", proxy.address)
    recorded = run_cli("record", LEADER_LOST, "node-7 went away", "--component", "ctl",
                       "--node", "node-7", "--spool-dir", str(tmp_path / "spool"),
                       "--token", token, *flags)  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    event_id = recorded.stdout.strip()

    def found(*args: str) -> bool:
        result = run_cli("query", "--json", *flags, *args)
        assert result.returncode == 0, result.stderr
        return event_id in [json.loads(x)["id"] for x in result.stdout.splitlines()]

    eventually(lambda: found("--token", token))
    refused = run_cli("query", *flags)
    assert refused.returncode == 1
    assert refused.stderr.startswith("protoevents query: UNAUTHENTICATED: the proxy requires")
    tail = subprocess.Popen(
        [sys.executable, "-m", "protoevents.proxy.cli", "tail", "-n", "1", "--token", token,
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert "node-7 went away" in Lines(tail).until("node-7 went away")
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=30) == 130
    monkeypatch.setenv("PROTOEVENTS_TOKEN", other)
    assert found()  # the token from the environment

    access.write_text(identity("spare", other_line))
    proxy.process.send_signal(signal.SIGHUP)
    eventually(lambda: "access file " + str(access) + " reloaded: 1 identities" in proxy.log())
    gone = run_cli("query", *flags, "--token", token)
    assert gone.returncode == 1
    assert gone.stderr == (
        "protoevents query: UNAUTHENTICATED: the bearer token is not in the access file "
        "(never added, or removed)\n"
    )
    assert found()  # the identity kept still works, without a restart
    assert proxy.stop(signal.SIGTERM) == 0
