"""Durations in Prometheus' and Alertmanager's syntax ("30s", "5m", "1h30m"), as seconds."""

from __future__ import annotations

import re

# Units largest first, each at most once, in this order, as Prometheus' model.ParseDuration.
_UNITS = (
    ("y", 365 * 86400.0),
    ("w", 7 * 86400.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
_DURATION = re.compile("".join(rf"(?:(?P<{unit}>\d+){unit})?" for unit, _ in _UNITS))


def parse_duration(text: str) -> float:
    """Seconds in `text`, such as "30s", "5m", "4h", "1h30m", "500ms" or "0"; raises
    ValueError saying what a duration looks like."""
    if text == "0":
        return 0.0
    found = _DURATION.fullmatch(text) if text else None
    if found is None:
        raise ValueError("expected a duration such as 30s, 5m, 4h or 1h30m (units y w d h m s ms)")
    return sum(int(found[unit]) * seconds for unit, seconds in _UNITS if found[unit] is not None)


def format_duration(seconds: float) -> str:
    """`seconds` in the same syntax ("5m", "1h30m"; "0s" for zero), for messages."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS:
        step = round(size * 1000)
        if millis >= step:
            parts.append(f"{millis // step}{unit}")
            millis %= step
    return "".join(parts)
