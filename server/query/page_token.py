"""Opaque, signed ListEvents page tokens: where the last page ended and which listing it was."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadData, URLSafeSerializer

from protoevents.proxy.statuses import InvalidArgumentError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERSION = 1
FIELD = "page_token"


@dataclass(frozen=True, slots=True)
class Cursor:
    """The (time, id) of the last event of a page: the next page starts strictly after it."""

    time: datetime
    id: str


class PageTokens:
    """Issues and reads page tokens signed with HMAC (itsdangerous). A token carries the
    cursor, the order and a digest of the filter, so a token is only good for the listing
    that issued it. Proxies answering on one address must share `secret`."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        self._serializer = URLSafeSerializer(
            secret if secret else secrets.token_bytes(32), salt="protoevents.v1.ListEvents"
        )

    def issue(self, cursor: Cursor, order: int, filter_digest: bytes) -> str:
        micros = (cursor.time - _EPOCH) // timedelta(microseconds=1)
        digest = base64.urlsafe_b64encode(filter_digest[:16]).decode()
        return str(self._serializer.dumps([_VERSION, order, micros, cursor.id, digest]))

    def read(self, token: str, order: int, filter_digest: bytes) -> Cursor:
        """The cursor of a token issued for this order and filter; InvalidArgumentError
        naming `page_token` for anything else."""
        try:
            version, token_order, micros, event_id, digest = self._serializer.loads(token)
            if not (
                version == _VERSION
                and isinstance(token_order, int)
                and isinstance(micros, int)
                and isinstance(event_id, str)
                and isinstance(digest, str)
            ):
                raise ValueError("unexpected content")
            time = _EPOCH + timedelta(microseconds=micros)
        except (BadData, ValueError, TypeError, OverflowError):
            raise InvalidArgumentError(
                FIELD,
                "not a page token this service issued (garbled, forged, or from a proxy with "
                "another page_token_secret); start the listing again without one",
            ) from None
        if token_order != order or digest != base64.urlsafe_b64encode(filter_digest[:16]).decode():
            raise InvalidArgumentError(
                FIELD,
                "the token belongs to a listing with another filter or order; send the same "
                "filter and order as the request that returned it",
            )
        return Cursor(time, event_id)
