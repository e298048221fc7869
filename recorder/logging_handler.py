"""A `logging.Handler` that turns log records into events of one chosen type."""

from __future__ import annotations

import logging

from protoevents.recorder.recorder import Recorder
from protoevents.v1 import severity_pb2


def severity_for_level(levelno: int) -> int:
    """The event severity of a logging level (DEBUG..CRITICAL map one to one)."""
    if levelno >= logging.CRITICAL:
        return severity_pb2.SEVERITY_CRITICAL
    if levelno >= logging.ERROR:
        return severity_pb2.SEVERITY_ERROR
    if levelno >= logging.WARNING:
        return severity_pb2.SEVERITY_WARNING
    if levelno >= logging.INFO:
        return severity_pb2.SEVERITY_INFO
    return severity_pb2.SEVERITY_DEBUG


class EventHandler(logging.Handler):
    """Records each log record as an event of `event_type` through `recorder`.

    The message is the formatted record; severity follows the level; attributes carry the
    logger name, and the module, function and line of the call.
    """

    def __init__(self, recorder: Recorder, event_type: int | str, level: int = logging.NOTSET):
        super().__init__(level)
        recorder.registry  # noqa: B018 - keep the recorder's registry loaded
        self.recorder = recorder
        self.event_type = recorder._resolver.resolve(event_type).name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.recorder.record(
                self.event_type,
                self.format(record),
                severity=severity_for_level(record.levelno),
                attributes={
                    "logger": record.name,
                    "module": record.module,
                    "function": record.funcName or "",
                    "line": str(record.lineno),
                },
            )
        except Exception:
            self.handleError(record)
