"""The README's shell examples: its sections, the commands of their sh blocks, and the shell
of a reader who runs them."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from tests.support.paths import ROOT

# The part of the README whose commands need certificates and a TLS proxy of their own
# (tests/proxy/trust/test_readme_network.py runs them): its section "On a network", up to
# the identities, whose commands the README commands test runs with the others.
NETWORK_SECTION = "On a network"
NETWORK_END = "\n### Identities and roles\n"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def section(title: str, text: str | None = None, end: str = "\n## ") -> str:
    """The `## title` section of the README, up to the next `## ` heading (or `end`)."""
    text = readme() if text is None else text
    start = text.index(f"\n## {title}\n")
    stop = text.find(end, start + 1)
    return text[start : stop if stop != -1 else len(text)]


def network_part(text: str | None = None) -> str:
    """The TLS part of the section "On a network"."""
    return section(NETWORK_SECTION, text, NETWORK_END)


def without_network_part(text: str | None = None) -> str:
    """The README without the TLS part of "On a network"."""
    text = readme() if text is None else text
    return text.replace(network_part(text), "\n")


def shell_commands(text: str, starts: tuple[str, ...] | None = None) -> list[str]:
    """The commands of the sh blocks of `text`, in order: lines joined where a command goes
    on (a trailing backslash, an open quote), comments cut; with `starts`, only those that
    start with one of them."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\"):  # bash takes backslash-newline as going on
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            command = uncommented(pending).strip()
            pending = ""
            if command and (starts is None or command.startswith(starts)):
                commands.append(command)
    return commands


def uncommented(command: str) -> str:
    """`command` without a trailing shell comment (a `#` after a blank, outside quotes)."""
    quote: str | None = None
    for at, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or command[at - 1] in " \t"):
            return command[:at]
    return command


class ReaderShell:
    """A reader's bash in `cwd` with `env`; `shell` makes a command as the README writes it
    into bash's arguments (the reader's substitutions made)."""

    timeout = 60

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def shell(self, command: str) -> list[str]:
        return ["bash", "-c", command]

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.shell(command),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )

    def start(self, command: str, **env: str) -> subprocess.Popen[str]:
        """`command` started (bash execs it), its output piped, in a session of its own."""
        return subprocess.Popen(
            self.shell(f"exec {command}"),
            cwd=self.cwd,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
