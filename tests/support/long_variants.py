"""The switch of the long test variants: PROTOEVENTS_CI_FULL=1 runs them (see .ci/run)."""

from __future__ import annotations

import os

FULL = os.environ.get("PROTOEVENTS_CI_FULL", "") == "1"


def scaled(short: int, full: int) -> int:
    """`full` under PROTOEVENTS_CI_FULL=1, else `short`."""
    return full if FULL else short
