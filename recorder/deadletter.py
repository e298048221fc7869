"""The dead-letter store of a spool slot: what the proxy refused for good, kept to be replayed.

It is a set-aside store (`protoevents.recorder.setaside`) in the folder `dead-letter` inside the
slot. The recorder opens it when it first sets a batch aside and releases it once no batch was set
aside for `idle_s` seconds, so that `protoevents spool replay-dead-letter` can take it meanwhile,
even while the component runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from protoevents.recorder.setaside import SetAside
from protoevents.v1 import set_aside_pb2

DEAD_LETTER = "dead-letter"


def dead_letter_dir(slot: Path) -> Path:
    """The dead-letter store of the spool slot `slot`."""
    return slot / DEAD_LETTER


class DeadLetter:
    """A slot's dead-letter store, held only while in use (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        idle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.idle_s = idle_s
        self._clock = clock
        self._store: SetAside | None = None
        self._last_put = 0.0

    def put(self, batch: set_aside_pb2.SetAsideBatch) -> None:
        """Append one batch durably. Raises OSError when the disk refuses it, and
        `SetAsideInUseError` while `protoevents spool` holds the store: nothing is kept then."""
        if self._store is None:
            self._store = SetAside(self.directory, fsync=self.fsync)
        self._store.put(batch)
        self._last_put = self._clock()

    def release_if_idle(self) -> None:
        """Release the store once nothing was put for `idle_s` seconds."""
        if self._store is not None and self._clock() - self._last_put >= self.idle_s:
            self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
