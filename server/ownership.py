"""One proxy per data directory and per address: the data directory's lock file, and the
process that holds a listening address."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import IO

import psutil

LOCK_FILE = "lock"
# Flags whose values no message or lock file shows (config.SECRETS as flags), and what
# shows instead.
SECRET_FLAGS = ("--redis-relay-key", "--page-token-secret")
HIDDEN = "(hidden)"
# Longest command line quoted in a message, in characters.
_COMMAND_CHARS = 300


class OwnershipError(RuntimeError):
    """Another process owns what this proxy needs; the message names it."""


class DataDirInUseError(OwnershipError):
    """The data directory is locked by another process."""


class AddressInUseError(OwnershipError):
    """The listen address cannot be bound (held by another process, or refused by the OS)."""


def this_command() -> str:
    """This process' command line as a user typed it (`protoevents serve ...`), secrets
    hidden."""
    return shlex.join(["protoevents", *hide_secrets(sys.argv[1:])])


def hide_secrets(arguments: list[str]) -> list[str]:
    """`arguments` with the values of SECRET_FLAGS replaced (`--flag VALUE`, `--flag=VALUE`)."""
    shown: list[str] = []
    hide_next = False
    for argument in arguments:
        flag, equals, _ = argument.partition("=")
        if hide_next:
            shown.append(HIDDEN)
        elif equals and flag in SECRET_FLAGS:
            shown.append(f"{flag}={HIDDEN}")
        else:
            shown.append(argument)
        hide_next = not hide_next and argument in SECRET_FLAGS
    return shown


class DataDirLock:
    """An exclusive advisory lock (flock) on `<data_dir>/lock`, holding the owner's pid and
    command line. The kernel releases it when the process ends, however it ends."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self, command: str | None = None) -> None:
        """Take the lock or raise DataDirInUseError naming the process that holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")  # not inherited by child processes
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            owner = handle.read()
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise DataDirInUseError(
                f"data directory {self.data_dir} is in use by {_describe_holder(owner)}"
            ) from None
        self._file = handle
        self.describe(command=command or this_command())

    def describe(self, **facts: object) -> None:
        """Write the owner's pid and `facts` (command, address) into the lock file."""
        if self._file is None:
            return
        known = self._read_own()
        known.update(facts, pid=os.getpid())
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(known) + "\n")
        self._file.flush()

    def _read_own(self) -> dict[str, object]:
        assert self._file is not None
        self._file.seek(0)
        with contextlib.suppress(ValueError):
            found = json.loads(self._file.read() or "{}")
            if isinstance(found, dict):
                return found
        return {}

    def release(self) -> None:
        """Give the lock up (the file stays: a later owner overwrites it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    """'process PID (COMMAND, listening on ADDRESS)' from a lock file's contents."""
    try:
        owner = json.loads(text)
    except ValueError:
        owner = None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return "another process"
    details = [_cut(str(owner.get("command") or ""))]
    if owner.get("address"):
        details.append(f"listening on {owner['address']}")
    return f"process {owner['pid']} ({', '.join(d for d in details if d)})"


def address_error(listen: str) -> AddressInUseError:
    """Why `listen` cannot be bound, naming the process listening on it when there is one."""
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    holder = listening_process(port)
    if holder is not None:
        return AddressInUseError(f"address {listen} is in use by {holder}")
    problem = bind_problem(host.strip("[]"), port)
    if problem is None or problem.errno == errno.EADDRINUSE:
        return AddressInUseError(f"address {listen} is in use by another process")
    return AddressInUseError(f"address {listen} cannot be bound: {problem.strerror}")


def bind_problem(host: str, port: int) -> OSError | None:
    """What binding (host, port) as a listener would fail with now, or None when it works
    (the socket options are grpc's: SO_REUSEADDR on, SO_REUSEPORT off)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, str(exc))
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                probe.listen()
            except OSError as exc:
                return exc
    return None


def listening_process(port: int) -> str | None:
    """'process PID (COMMAND)' of the process with a TCP listener on `port`, or None when
    there is none this process may see."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for connection in connections:
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        ):
            try:
                command = shlex.join(hide_secrets(psutil.Process(connection.pid).cmdline()))
            except (psutil.Error, OSError):
                return f"process {connection.pid}"
            return f"process {connection.pid} ({_cut(command)})"
    return None


def _cut(command: str) -> str:
    return command if len(command) <= _COMMAND_CHARS else command[: _COMMAND_CHARS - 3] + "..."
