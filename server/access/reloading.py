"""The access file in force: reloaded when it changes (its mtime looked at no more than once
per `check_every_s`) or when asked (SIGHUP); a bad reload keeps the last good policy."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from protoevents.proxy.access.policy import AccessFileError, AccessPolicy, load

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int]


def _stamp(path: Path) -> _Stamp | None:
    """What tells one version of the file from another (None when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class AccessFile:
    """Holds the policy of `path`. Construct with `open` (which raises AccessFileError for a
    bad file); `policy()` is what calls are decided by."""

    def __init__(
        self,
        path: Path,
        policy: AccessPolicy,
        stamp: _Stamp | None,
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._policy = policy
        self._stamp = stamp
        self.check_every_s = check_every_s
        self.clock = clock
        self.on_failure = on_failure
        self._checked = clock()
        self._failed_stamp: _Stamp | None = None
        self._looking = threading.Lock()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> AccessFile:
        """The access file at `path`, read now; raises AccessFileError when it is bad."""
        stamp = _stamp(path)
        return cls(
            path,
            load(path),
            stamp,
            check_every_s=check_every_s,
            clock=clock,
            on_failure=on_failure,
        )

    def policy(self) -> AccessPolicy:
        """The policy in force, reloaded first when the file changed since it was read."""
        now = self.clock()
        # Calls decide on the event loop and on the query threads: one of them looks.
        if now - self._checked >= self.check_every_s and self._looking.acquire(blocking=False):
            try:
                self._checked = now
                stamp = _stamp(self.path)
                if stamp not in (self._stamp, self._failed_stamp):
                    self._reload(stamp)
            finally:
                self._looking.release()
        return self._policy

    def reload(self) -> bool:
        """Read the file again now (SIGHUP); False when it is bad and the last good stays."""
        with self._looking:
            self._checked = self.clock()
            return self._reload(_stamp(self.path))

    def _reload(self, stamp: _Stamp | None) -> bool:
        try:
            policy = load(self.path)
        except AccessFileError as exc:
            self._failed_stamp = stamp  # logged once per bad version, not once a second
            log.error("access file not reloaded, the last good one stays in force: %s", exc)
            if self.on_failure is not None:
                self.on_failure()
            return False
        self._policy, self._stamp, self._failed_stamp = policy, stamp, None
        log.info("access file %s reloaded: %d identities", self.path, len(policy.identities))
        return True
