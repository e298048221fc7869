"""Denials counted by reason and logged at most once per interval per identity."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from protoevents.proxy.metrics import Metrics
from protoevents.proxy.throttle import Throttle

log = logging.getLogger(__name__)

# Reasons, the `reason` label of protoevents_denials_total.
NO_CREDENTIALS = "no_credentials"
UNKNOWN_TOKEN = "unknown_token"
UNKNOWN_CERTIFICATE = "unknown_certificate"
TOKEN_OVER_PLAINTEXT = "token_over_plaintext"
MISSING_ROLE = "missing_role"
SOURCE_FORBIDDEN = "source_forbidden"
SITE_FORBIDDEN = "site_forbidden"
REASONS = (
    NO_CREDENTIALS,
    UNKNOWN_TOKEN,
    UNKNOWN_CERTIFICATE,
    TOKEN_OVER_PLAINTEXT,
    MISSING_ROLE,
    SOURCE_FORBIDDEN,
    SITE_FORBIDDEN,
)


class Denials:
    """Counts every denial; logs one line per `who` (an identity, or the peer host when there
    is none) and `interval_s`, saying how many more there were since the last line."""

    def __init__(
        self,
        metrics: Metrics,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.throttle = Throttle(interval_s, clock)
        for reason in REASONS:  # scraped as 0 before the first
            metrics.denials.labels(reason)

    def deny(self, reason: str, who: str, message: str, count: int = 1) -> None:
        """Count `count` denials of `reason`; log `message` unless `who` was logged lately."""
        self.metrics.denials.labels(reason).inc(count)
        reported = self.throttle.add(who, count)
        if reported is None:
            return
        more = reported - count
        since = f" ({more} more denied since the last report)" if more else ""
        log.warning("denied %s: %s%s", who, message, since)
