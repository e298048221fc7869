"""Turning what callers pass as an event type into a registered `EventType`, fast."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import EnumDescriptor

from protoevents.recorder.errors import (
    AmbiguousEventTypeError,
    UnknownEventTypeError,
    UnspecifiedEventTypeError,
)
from protoevents.recorder.registry import EnumType, EventType, Registry


class EventTypeResolver:
    """Maps enum values, qualified names and value names to the recorder's event types.

    Every accepted spelling is precomputed into one dict, so the hot path is a single lookup.
    """

    def __init__(self, enums: Iterable[EnumType | EnumDescriptor]) -> None:
        enums = list(enums)
        if not enums:
            raise ValueError("event_types: give at least one generated event-type enum")
        self.registry = Registry.from_enums(enums)
        self._allowed = ", ".join(self.registry.enum_names)
        self._table: dict[int | str, EventType] = {}
        self._ambiguous: dict[int, list[str]] = {}
        numbers: dict[int, list[EventType]] = {}
        for event_type in self.registry:
            self._table[event_type.name] = event_type
            numbers.setdefault(event_type.number, []).append(event_type)
        for event_type in self.registry:
            if self._unique_short(event_type):
                self._table[event_type.short_name] = event_type
        for number, types in numbers.items():
            if len(types) == 1:
                self._table[number] = types[0]
            else:
                self._ambiguous[number] = [t.name for t in types]

    def _unique_short(self, event_type: EventType) -> bool:
        try:
            return self.registry.lookup(event_type.short_name) is event_type
        except KeyError:
            return False

    def resolve(self, value: object) -> EventType:
        """The event type for `value`; raises a specific EventTypeError or TypeError."""
        found = self._table.get(value) if isinstance(value, int | str) else None
        if found is not None:
            return found
        return self._fail(value)

    def _fail(self, value: object) -> EventType:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(
                f"event_type must be an enum value (int) or a type name (str), "
                f"not {type(value).__name__}"
            )
        if isinstance(value, int):
            if value == 0:
                raise UnspecifiedEventTypeError(
                    f"event type 0 is the UNSPECIFIED value, not an event type; "
                    f"allowed enums: {self._allowed}"
                )
            if value in self._ambiguous:
                raise AmbiguousEventTypeError(
                    f"event type {value} is ambiguous: it is a value of "
                    f"{', '.join(self._ambiguous[value])}; pass the type's name instead"
                )
            raise UnknownEventTypeError(
                f"event type {value} is not a value of the recorder's enums: {self._allowed}"
            )
        if value.endswith("_UNSPECIFIED"):
            raise UnspecifiedEventTypeError(
                f"event type {value!r} is the UNSPECIFIED value, not an event type; "
                f"allowed enums: {self._allowed}"
            )
        raise UnknownEventTypeError(f"unknown event type {value!r}; allowed enums: {self._allowed}")
