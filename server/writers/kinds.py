"""The kinds of writer a `[[writers]]` table may name: one row each."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, cast

from protoevents.proxy.writers.base import Builder, WriterOptions


class _KindModule(Protocol):
    Options: type[WriterOptions]
    build: Builder


@dataclass(frozen=True, slots=True)
class WriterKind:
    """A kind of writer: the module that holds its `Options` (a WriterOptions dataclass), its
    `build(options, name, context)` and its writer class. The module is imported when a writer
    of the kind is configured, so commands that configure none do not load its libraries."""

    module: str

    def _load(self) -> _KindModule:
        return cast(_KindModule, importlib.import_module(self.module))

    @property
    def options(self) -> type[WriterOptions]:
        return self._load().Options

    @property
    def build(self) -> Builder:
        return self._load().build


KINDS: dict[str, WriterKind] = {
    "sql": WriterKind("protoevents.proxy.writers.sql"),
    "jsonl": WriterKind("protoevents.proxy.writers.jsonl"),
    "syslog": WriterKind("protoevents.proxy.writers.syslog"),
    "redis": WriterKind("protoevents.proxy.writers.redis"),
    "forward": WriterKind("protoevents.proxy.writers.forward"),
}


def kind_of(options: WriterOptions) -> str:
    """The name of the kind whose module defines the class of `options`."""
    module = type(options).__module__
    return next(name for name, kind in KINDS.items() if kind.module == module)
