"""What every kind of writer builds on: the base of its options, the error of a bad option
value, and what its builder is given besides its options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from protoevents.proxy.changes import Writer


class WriterConfigError(ValueError):
    """A writer option has a bad value."""

    def __init__(self, key: str, value: object, why: str) -> None:
        shown = str(value) if isinstance(value, Path) else value
        super().__init__(f"{key} = {shown!r}: {why}")
        self.key = key


@dataclass(frozen=True, slots=True)
class WriterOptions:
    """The options of one kind of writer: a frozen dataclass whose fields are the keys of its
    `[[writers]]` table (typed `str`, `Path`, `bool`, `int`, `float`, optionally `| None`; a
    field with metadata `{"integer_as_text": True}` also takes an integer, kept as text)."""

    # Builds on the proxy's database: the writer cannot be built without opening it.
    uses_database: ClassVar[bool] = False

    def validate(self) -> None:
        """Raise WriterConfigError naming the first option whose value makes no sense."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a builder may use besides its options: the proxy's database engine, and the key
    signing what is published for the Redis relay (None when the proxy has none)."""

    engine: Engine | None  # None when no writer of the proxy uses its database
    relay_key: bytes | None = None


# build(options, name, context): the writer named `name` that the options describe.
Builder = Callable[[Any, str, BuildContext], "Writer"]
