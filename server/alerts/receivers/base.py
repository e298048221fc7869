"""What every kind of receiver builds on: the base of its options, the error of a bad option
value, what a receiver does, and an options table read into its typed options."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from protoevents.proxy.alerts.model import Notification
from protoevents.proxy.writers.base import WriterConfigError


class ReceiverConfigError(WriterConfigError):
    """A receiver option has a bad value: `KEY = VALUE: why`."""


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    """The options of one kind of receiver: a frozen dataclass whose fields are the keys of
    its table (typed `str`, `Path`, `bool`, `int`, `float`, optionally `| None`, or
    `tuple[str, ...]` and `dict[str, str]`)."""

    def validate(self) -> None:
        """Raise ReceiverConfigError naming the first option whose value makes no sense."""


class Receiver(Protocol):
    """Delivers notifications to one destination."""

    name: str

    async def deliver(self, notification: Notification) -> None:
        """Send `notification` once; raise DeliveryError saying whether a resend may work."""

    async def close(self) -> None:
        """Release connections and threads; no delivery follows."""


def read_secret(key: str, path: Path) -> str:
    """The text of a secret file (a token, a password), its surrounding whitespace stripped;
    raises ReceiverConfigError naming `key` when it cannot be read or is empty."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiverConfigError(key, path, f"cannot be read: {exc}") from None
    if not text:
        raise ReceiverConfigError(key, path, "the file is empty")
    return text


class _Validated(Protocol):
    def validate(self) -> None: ...


# Receiver options, or writer options shared with a receiver (the syslog receiver's).
OptionsT = TypeVar("OptionsT", bound=_Validated)


def _convert(key: str, kind: Any, raw: object) -> object:
    """`raw` (a TOML value) as a value of the type `kind`."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return _convert(key, inner, raw)
    if kind is str or kind is Path:
        if not isinstance(raw, str) or (kind is Path and not raw):
            raise ReceiverConfigError(key, raw, "expected a string" if kind is str else "a path")
        return Path(raw) if kind is Path else raw
    if kind is bool:
        if not isinstance(raw, bool):
            raise ReceiverConfigError(key, raw, "expected true or false")
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ReceiverConfigError(key, raw, "expected an integer")
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ReceiverConfigError(key, raw, "expected a number")
        return float(raw)
    if typing.get_origin(kind) is tuple:
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise ReceiverConfigError(key, raw, "expected a list of strings")
        return tuple(raw)
    if typing.get_origin(kind) is dict:
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise ReceiverConfigError(key, raw, "expected a table of strings")
        return dict(raw)
    raise AssertionError(f"no conversion for {kind}")


def parse_options(cls: type[OptionsT], table: Mapping[str, object], kind: str) -> OptionsT:
    """The options `table` gives for a receiver of `kind`, validated; raises
    ReceiverConfigError naming the unknown, missing or bad key."""
    hints = typing.get_type_hints(cls)
    option_fields = {f.name: f for f in fields(cast(Any, cls))}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in option_fields:
            why = f"unknown key for a {kind} receiver; known: {', '.join(option_fields)}"
            raise ReceiverConfigError(key, raw, why)
        number = isinstance(raw, int) and not isinstance(raw, bool)
        text = number and option_fields[key].metadata.get("integer_as_text", False)
        values[key] = _convert(key, hints[key], str(raw) if text else raw)
    for key, option in option_fields.items():
        if key not in values and option.default is MISSING and option.default_factory is MISSING:
            raise ReceiverConfigError(key, None, f"required for a {kind} receiver")
    options = cls(**values)
    options.validate()
    return options
