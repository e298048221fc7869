"""Denials counted by reason and logged at most once per interval per identity."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from protoevents.proxy.metrics import Metrics

log = logging.getLogger(__name__)

# Reasons, the `reason` label of protoevents_denials_total.
NO_CREDENTIALS = "no_credentials"
UNKNOWN_TOKEN = "unknown_token"
UNKNOWN_CERTIFICATE = "unknown_certificate"
TOKEN_OVER_PLAINTEXT = "token_over_plaintext"
MISSING_ROLE = "missing_role"
SOURCE_FORBIDDEN = "source_forbidden"


class Denials:
    """Counts every denial; logs one line per `who` (an identity, or the peer when there is
    none) and `interval_s`, saying how many more there were since the last line."""

    def __init__(
        self,
        metrics: Metrics,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def deny(self, reason: str, who: str, message: str, count: int = 1) -> None:
        """Count `count` denials of `reason`; log `message` unless `who` was logged lately."""
        self.metrics.denials.labels(reason).inc(count)
        now = self.clock()
        last = self._last.get(who)
        if last is not None and now - last < self.interval_s:
            self._quiet[who] = self._quiet.get(who, 0) + count
            return
        self._last[who] = now
        quiet = self._quiet.pop(who, 0)
        since = f" ({quiet} more denied since the last report)" if quiet else ""
        log.warning("denied %s: %s%s", who, message, since)
        if len(self._last) > 10_000:  # forget old reporters: peers may be many
            cutoff = now - self.interval_s
            self._last = {k: t for k, t in self._last.items() if t >= cutoff}
