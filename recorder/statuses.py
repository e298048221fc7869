"""What the recorder makes of the status a proxy ends a Record stream (or a call) with.

No status makes the recorder discard a batch. Most say "not now" and the batch is sent again
after a backoff; a few say that the batch itself is refused, and it is then set aside in the
dead-letter store beside the spool, where `protoevents spool` shows and replays it.
"""

from __future__ import annotations

import enum
import re

import grpc


class Verdict(enum.Enum):
    """What to do with the batch a stream failed on."""

    RETRY = "retry"
    """The proxy cannot take it now (down, overloaded, its log full): keep it, send it again."""
    SUSPECT = "suspect"
    """An error of the proxy's own: send it again, alone, and set it aside after
    `SUSPECT_ATTEMPTS` refusals in a row."""
    BAD_BATCH = "bad_batch"
    """The batch itself is refused: send it alone once more, then set it aside."""


# Sending the same batch alone this many times, each refused with a SUSPECT status, sets it
# aside. With the backoff doubling from 50 ms to `backoff_max` (5 s), that is about 20 s.
SUSPECT_ATTEMPTS = 8

_BAD_BATCH = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_SUSPECT = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})
# gRPC's own words for a message over a receive or send limit, on either side.
_TOO_LARGE = re.compile(r"message larger than max", re.IGNORECASE)


def too_large(code: grpc.StatusCode, details: str) -> bool:
    """The status says a message was over a size limit (RESOURCE_EXHAUSTED, gRPC's words)."""
    return code is grpc.StatusCode.RESOURCE_EXHAUSTED and bool(_TOO_LARGE.search(details))


def verdict(code: grpc.StatusCode, details: str) -> Verdict:
    """The verdict on a batch refused with `code` and `details`. Everything not named here
    (UNAVAILABLE, RESOURCE_EXHAUSTED for a full log or overload, DEADLINE_EXCEEDED, ABORTED,
    CANCELLED, and even PERMISSION_DENIED or UNAUTHENTICATED, which an operator fixes) is
    retried."""
    if code in _BAD_BATCH or too_large(code, details):
        return Verdict.BAD_BATCH
    if code in _SUSPECT:
        return Verdict.SUSPECT
    return Verdict.RETRY
