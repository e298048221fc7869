"""The kinds of receiver a rule may name: one row each, and a receiver built from its table."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from protoevents.proxy.alerts.receivers.base import Receiver, ReceiverConfigError, parse_options
from protoevents.recorder.registry import Registry


class _KindModule(Protocol):
    Options: type[Any]
    build: Callable[[Any, str, Registry | None], Receiver]


@dataclass(frozen=True, slots=True)
class ReceiverKind:
    """A kind of receiver: the module holding its `Options` dataclass, its
    `build(options, name, registry)` and its receiver class, imported when a receiver of the
    kind is configured (so its libraries load only then)."""

    module: str

    def load(self) -> _KindModule:
        return cast(_KindModule, importlib.import_module(self.module))


KINDS: dict[str, ReceiverKind] = {
    "webhook": ReceiverKind("protoevents.proxy.alerts.receivers.webhook"),
    "email": ReceiverKind("protoevents.proxy.alerts.receivers.email"),
    "syslog": ReceiverKind("protoevents.proxy.alerts.receivers.syslog"),
}


def parse_receiver(kind: str, table: Mapping[str, object]) -> Any:
    """The validated options of a receiver of `kind` from its table (without `kind`);
    raises ReceiverConfigError naming the key."""
    if kind not in KINDS:
        raise ReceiverConfigError("kind", kind, f"expected one of {', '.join(KINDS)}")
    return parse_options(KINDS[kind].load().Options, table, kind)


def build_receiver(
    kind: str, options: object, name: str, registry: Registry | None = None
) -> Receiver:
    """The receiver named `name` of `kind` that `options` (parse_receiver's) describe;
    `registry` gives the event types' descriptions to the receivers that show them."""
    return KINDS[kind].load().build(options, name, registry)
