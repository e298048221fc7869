"""The JSON lines writer (kind `jsonl`): every change appended to a file (debugging, tests,
simple setups)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from protoevents.proxy.changes import Change
from protoevents.proxy.writers.base import BuildContext, WriterOptions
from protoevents.v1 import query_service_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JsonlOptions(WriterOptions):
    """Every change as a JSON line appended to `path`."""

    path: Path


Options = JsonlOptions


class JsonLinesWriter:
    """Appends `{"kind": "CREATED"|"UPDATED", "event": {...}}` lines, flushed and fsynced
    before `write` returns. Idempotent: a change already in the file (same kind, id and
    count) is not written again, so replays after a crash leave no duplicate lines. It keeps
    those keys in memory, so it suits files of moderate size.
    """

    def __init__(self, path: Path, name: str = "jsonl") -> None:
        self.name = name
        self.path = path
        self._seen: set[tuple[str, str, int]] = set()
        if path.exists():
            self._read_existing()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def _read_existing(self) -> None:
        """Remember the changes already in the file. A last line without its newline is a
        write torn by a crash, never acknowledged to the log: it is cut off (the dispatcher
        hands those changes again from the writer's bookmark)."""
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning(
                "%s: cut %d bytes of a torn last line (rewritten from the log)",
                self.path,
                len(data) - whole,
            )
            with self.path.open("r+b") as handle:
                handle.truncate(whole)
                os.fsync(handle.fileno())
        for line in data[:whole].splitlines():
            if line.strip():
                self._seen.add(self._key_of(json.loads(line)))

    @staticmethod
    def _key_of(entry: dict[str, object]) -> tuple[str, str, int]:
        event = entry["event"]
        assert isinstance(event, dict)
        return str(entry["kind"]), str(event.get("id", "")), int(event.get("count", 0))

    def _lines(self, changes: Sequence[Change]) -> list[str]:
        lines = []
        for change in changes:
            kind = query_service_pb2.ChangeKind.Name(change.kind).removeprefix("CHANGE_KIND_")
            key = (kind, change.event.id, change.event.count)
            if key in self._seen:
                continue
            self._seen.add(key)
            event = json_format.MessageToDict(change.event)
            lines.append(json.dumps({"kind": kind, "event": event}, separators=(",", ":")))
        return lines

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    async def write(self, changes: Sequence[Change]) -> None:
        await asyncio.to_thread(self._append, self._lines(changes))

    async def close(self) -> None:
        self._file.close()


def build(options: JsonlOptions, name: str, context: BuildContext) -> JsonLinesWriter:
    return JsonLinesWriter(options.path, name=name)
