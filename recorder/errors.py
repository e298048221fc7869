"""Exceptions raised to the caller of `Recorder.record`: only for the caller's own mistakes."""

from __future__ import annotations


class EventTypeError(ValueError):
    """The event type passed to `record()` cannot be recorded by this recorder."""


class UnknownEventTypeError(EventTypeError):
    """The event type is not a value of any enum the recorder was created with."""


class UnspecifiedEventTypeError(EventTypeError):
    """The event type is the zero (`*_UNSPECIFIED`) value of an event-type enum."""


class AmbiguousEventTypeError(EventTypeError):
    """A bare enum number matches values of several of the recorder's enums."""


class EventTooLargeError(ValueError):
    """The event, serialized, is over the recorder's `max_event_bytes`."""


class SpoolInUseError(RuntimeError):
    """Another live recorder holds every spool slot this recorder could use."""
