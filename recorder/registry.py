"""The registry of event types, built from the descriptors of event-type enums."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from google.protobuf.descriptor import EnumDescriptor, FileDescriptor

from protoevents.v1 import options_pb2, severity_pb2

BUILTIN_MODULES = (
    "protoevents.cluster.v1.cluster_events_pb2",
    "protoevents.nic.v1.nic_events_pb2",
    "protoevents.lab.v1.lab_events_pb2",
    "protoevents.instrument.v1.instrument_events_pb2",
)

_SEVERITIES: dict[str, int] = dict(severity_pb2.Severity.items())
# The defined severities (SEVERITY_UNSPECIFIED aside).
SEVERITY_VALUES = frozenset(v for v in _SEVERITIES.values() if v)
_CATEGORY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class RegistryError(ValueError):
    """An event-type declaration is wrong; the message names the enum value at fault."""


class EnumType(Protocol):
    """A generated protobuf enum (its `EnumTypeWrapper`)."""

    DESCRIPTOR: EnumDescriptor


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type: an annotated value of an event-type enum."""

    name: str
    number: int
    severity: int
    category: str
    description: str
    service: str
    enum_name: str

    @property
    def severity_name(self) -> str:
        """The severity without its prefix, such as "WARNING"."""
        return severity_name(self.severity)

    @property
    def short_name(self) -> str:
        """The enum value name alone, such as "CLUSTER_EVENT_TYPE_LEADER_ELECTED"."""
        return self.name.rsplit(".", 1)[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "number": self.number,
            "severity": self.severity_name,
            "category": self.category,
            "description": self.description,
            "service": self.service,
            "enum": self.enum_name,
        }


def severity_name(value: int) -> str:
    """Name of a Severity value without the `SEVERITY_` prefix."""
    return severity_pb2.Severity.Name(value).removeprefix("SEVERITY_")  # type: ignore[arg-type]


def parse_severity(text: str) -> int:
    """Severity value from a name such as "warning" or "SEVERITY_WARNING"."""
    key = text.strip().upper()
    key = key if key.startswith("SEVERITY_") else f"SEVERITY_{key}"
    value = _SEVERITIES.get(key, 0)
    if not value:
        allowed = ", ".join(severity_name(v) for v in _SEVERITIES.values() if v)
        raise ValueError(f"unknown severity {text!r}; expected one of {allowed}")
    return value


def _service_of(enum: EnumDescriptor) -> str:
    options = enum.GetOptions()
    if options.HasExtension(options_pb2.event_service):
        declared: str = options.Extensions[options_pb2.event_service]
        if declared:
            return declared
    parts = enum.file.package.split(".")
    if len(parts) >= 2 and re.fullmatch(r"v\d+((alpha|beta)\d*)?", parts[-1]):
        return parts[-2]
    return parts[-1] if parts[-1] else enum.name


def event_types_of(enum: EnumDescriptor) -> list[EventType]:
    """The event types an enum declares; empty when it is not an event-type enum.

    Raises RegistryError when the enum is half-annotated, a zero value is annotated, or an
    annotation lacks a severity, category or description.
    """
    annotated = [v for v in enum.values if v.GetOptions().HasExtension(options_pb2.event)]
    if not annotated:
        return []
    service = _service_of(enum)
    found: list[EventType] = []
    for value in enum.values:
        where = f"{enum.full_name}.{value.name}"
        if value.number == 0:
            if value in annotated:
                raise RegistryError(
                    f"{where}: the zero value cannot be an event type; keep it as "
                    "*_UNSPECIFIED without the (protoevents.v1.event) option"
                )
            continue
        if value not in annotated:
            raise RegistryError(
                f"{where}: event-type enum value has no (protoevents.v1.event) option"
            )
        opts = value.GetOptions().Extensions[options_pb2.event]
        if opts.severity not in severity_pb2.Severity.values() or opts.severity == 0:
            raise RegistryError(f"{where}: no severity declared in (protoevents.v1.event)")
        if not _CATEGORY.match(opts.category):
            raise RegistryError(
                f"{where}: category {opts.category!r} must be a lowercase word "
                "(letters, digits, '-' or '_')"
            )
        if not opts.description.strip():
            raise RegistryError(f"{where}: no description declared in (protoevents.v1.event)")
        found.append(
            EventType(
                name=where,
                number=value.number,
                severity=opts.severity,
                category=opts.category,
                description=opts.description.strip(),
                service=service,
                enum_name=enum.full_name,
            )
        )
    return found


def _enums_of_file(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        yield from message.enum_types
        pending.extend(message.nested_types)


class Registry:
    """All event types known to a recorder or proxy, by qualified name."""

    def __init__(self, types: Iterable[EventType] = ()) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_short: dict[str, list[EventType]] = {}
        self._enums: dict[str, list[EventType]] = {}
        for event_type in types:
            self._add(event_type)

    def _add(self, event_type: EventType) -> None:
        existing = self._by_name.get(event_type.name)
        if existing is not None:
            if existing == event_type:
                return
            raise RegistryError(
                f"duplicate event type {event_type.name}: declared twice with different "
                "attributes (two copies of the same .proto?)"
            )
        self._by_name[event_type.name] = event_type
        self._by_short.setdefault(event_type.short_name, []).append(event_type)
        self._enums.setdefault(event_type.enum_name, []).append(event_type)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_enums(cls, enums: Iterable[EnumType | EnumDescriptor]) -> Registry:
        """A registry of the given generated enums; each must be an event-type enum."""
        registry = cls()
        for enum in enums:
            registry.add_enum(enum)
        return registry

    @classmethod
    def from_modules(cls, modules: Iterable[str | ModuleType]) -> Registry:
        """A registry of every event-type enum in the given generated `_pb2` modules."""
        registry = cls()
        for module in modules:
            registry.add_module(module)
        return registry

    @classmethod
    def builtin(cls) -> Registry:
        """The event types shipped with protoevents."""
        return cls.from_modules(BUILTIN_MODULES)

    def add_enum(self, enum: EnumType | EnumDescriptor) -> None:
        descriptor = enum if isinstance(enum, EnumDescriptor) else enum.DESCRIPTOR
        types = event_types_of(descriptor)
        if not types:
            raise RegistryError(
                f"{descriptor.full_name} is not an event-type enum: none of its values has "
                "the (protoevents.v1.event) option"
            )
        for event_type in types:
            self._add(event_type)

    def add_module(self, module: str | ModuleType) -> None:
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except ImportError as exc:
                raise RegistryError(f"cannot import event module {module!r}: {exc}") from exc
        file: FileDescriptor | None = getattr(module, "DESCRIPTOR", None)
        if not isinstance(file, FileDescriptor):
            raise RegistryError(f"{module.__name__} is not a generated _pb2 module")
        for enum in _enums_of_file(file):
            for event_type in event_types_of(enum):
                self._add(event_type)

    def merged(self, other: Registry) -> Registry:
        return Registry([*self, *other])

    # -- lookup --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[EventType]:
        order = sorted(self._by_name.values(), key=lambda t: (t.service, t.enum_name, t.number))
        return iter(order)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> EventType | None:
        """The type with this qualified name, or None."""
        return self._by_name.get(name)

    def lookup(self, name: str) -> EventType:
        """The type named by its qualified name or, when unambiguous, its value name.

        Raises KeyError with a message naming the known enums.
        """
        found = self._by_name.get(name)
        if found is not None:
            return found
        candidates = self._by_short.get(name.rsplit(".", 1)[-1], []) if "." not in name else []
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(c.name for c in candidates)
            raise KeyError(f"event type {name!r} is ambiguous: it matches {names}")
        raise KeyError(f"unknown event type {name!r}; known enums: {', '.join(self.enum_names)}")

    def in_enum(self, enum_name: str, number: int) -> EventType | None:
        for event_type in self._enums.get(enum_name, ()):
            if event_type.number == number:
                return event_type
        return None

    @property
    def enum_names(self) -> list[str]:
        return sorted(self._enums)

    @property
    def categories(self) -> list[str]:
        return sorted({t.category for t in self._by_name.values()})

    @property
    def services(self) -> list[str]:
        return sorted({t.service for t in self._by_name.values()})

    def select(self, category: str | None = None, service: str | None = None) -> list[EventType]:
        """Types of the given category and/or service, in registry order."""
        return [
            t
            for t in self
            if (category is None or t.category == category)
            and (service is None or t.service == service)
        ]
