"""Signed messages of the Redis relay: only holders of the shared key feed the watchers.

A signed message is `SIGNED_PREFIX`, then the 32-byte HMAC-SHA256 under the key of the
channel's name, a NUL byte and the payload, then the payload (a serialized
`protoevents.v1.WatchEventsResponse`). The channel is in what is signed, so that a message
cannot be moved from one channel to another; a genuine message published again on its own
channel is accepted again (the hub leaves out a change it has already handed on).
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

SIGNED_PREFIX = b"protoevents-hmac-sha256:"
DIGEST_BYTES = hashlib.sha256().digest_size


class Forgery(StrEnum):
    """Why a message was refused: the label of `protoevents_relay_forged_total`."""

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"


class ForgedMessageError(ValueError):
    """A message without a valid signature under the relay's key."""

    def __init__(self, reason: Forgery) -> None:
        super().__init__(
            "no signature" if reason is Forgery.UNSIGNED else "a signature that does not match"
        )
        self.reason = reason


def _digest(key: bytes, channel: str, payload: bytes) -> bytes:
    return hmac.digest(key, channel.encode() + b"\0" + payload, "sha256")


def sign(key: bytes, channel: str, payload: bytes) -> bytes:
    """The message that carries `payload` on `channel`, signed with `key`."""
    return SIGNED_PREFIX + _digest(key, channel, payload) + payload


def verify(key: bytes, channel: str, message: bytes) -> bytes:
    """The payload of a message `sign` made with `key` for `channel`; raises
    ForgedMessageError for any other message (compared in constant time)."""
    if not message.startswith(SIGNED_PREFIX) or len(message) < len(SIGNED_PREFIX) + DIGEST_BYTES:
        raise ForgedMessageError(Forgery.UNSIGNED)
    start = len(SIGNED_PREFIX)
    signature, payload = message[start : start + DIGEST_BYTES], message[start + DIGEST_BYTES :]
    if not hmac.compare_digest(signature, _digest(key, channel, payload)):
        raise ForgedMessageError(Forgery.BAD_SIGNATURE)
    return payload
