"""Event ids: the one accepted text form (canonical UUID text) and the spellings that map to it."""

from __future__ import annotations

import re
import uuid

# What str(uuid.UUID) gives: 36 characters, lower-case hex, hyphens after 8, 12, 16 and 20.
CANONICAL = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")
# The characters of every spelling uuid.UUID reads (hex, hyphens, braces, "urn:uuid:"); its
# parser also lets int() skip whitespace, a sign and underscores, which no spelling holds.
_SPELLING = re.compile(r"[0-9A-Fa-f{}:\-URNIDurnid]{32,45}")


def is_canonical(text: str) -> bool:
    """Whether `text` is a UUID in its canonical text form."""
    return len(text) == 36 and CANONICAL.fullmatch(text) is not None


def canonical(text: str) -> str | None:
    """The canonical form of a UUID written in any spelling `uuid.UUID` reads (upper case,
    `{...}`, `urn:uuid:`, bare hex), or None when `text` is not a UUID."""
    if is_canonical(text):
        return text
    if _SPELLING.fullmatch(text) is None:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def shown(text: str) -> str:
    """`text` quoted for a message, cut after 64 characters."""
    return repr(text if len(text) <= 64 else text[:64] + "...")


def id_problem(text: str) -> str | None:
    """Why `text` is not an acceptable event id, or None when it is canonical."""
    if is_canonical(text):
        return None
    if not text:
        return "id is empty"
    spelled = canonical(text)
    if spelled is not None:
        return f"id {shown(text)} is not canonical: use {spelled!r} (lower case, hyphenated)"
    return (
        f"id {shown(text)} is not a UUID: expected the canonical UUID text "
        "(36 characters: lower-case hex, hyphenated 8-4-4-4-12)"
    )
