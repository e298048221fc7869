"""The changes another proxy forwards (EventForwardService), decided into change records.

A site's forward writer (`protoevents.proxy.writers.forward`) sends the changes of its log, in
log order. Each request is checked whole: every event valid, of a site the caller's identity
may forward for. Then its new events whose ids this proxy holds already are left out (a
resend), and the rest with every update become one change record, like an ingest batch's but
past dedup (the site deduplicated them). Changes of types this proxy does not know yet go to
its quarantine, to be stored once it is started with them. Writers apply changes idempotently
by id (`protoevents.proxy.changes.Change`): a resend after any failure stores nothing twice
and never lowers a count.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TypeAlias

from protoevents.proxy import changelog
from protoevents.proxy.access.policy import Identity
from protoevents.proxy.ingest import Ingest, Persisted, joined
from protoevents.proxy.validation import MalformedBatchError, UnknownType
from protoevents.v1 import event_pb2, forward_service_pb2, proxy_service_pb2

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GROWTH_PER_EVENT = 120  # the site (up to 64 bytes), framing, the id in the id list
_RECORD_OVERHEAD = 64

Request: TypeAlias = forward_service_pb2.ForwardRequest
Response: TypeAlias = forward_service_pb2.ForwardResponse


class InvalidChangeError(MalformedBatchError):
    """A forwarded request holds a change this proxy refuses (answered INVALID_ARGUMENT);
    nothing of the request is stored."""


class SiteForbiddenError(Exception):
    """The caller's identity may not forward for a site a change came through (answered
    PERMISSION_DENIED); nothing of the request is stored."""


def site_problem(site: str) -> str | None:
    """Why `site` is not a site name (None when it is one)."""
    if SITE_NAME.fullmatch(site) is None:
        return (
            f"site {site!r} is not a site name (1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit)"
        )
    return None


class ForwardedChanges:
    """Turns forwarded requests into persisted change records, in the log of `ingest` (its
    validator, recent-id cache, quarantine and metrics too)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def submit(
        self, request: Request, identity: Identity | None
    ) -> tuple[Response, Persisted | None]:
        """Decide on a request from `identity` (None: any site allowed) and queue its record.
        Returns the response and a future that completes once everything it acknowledges is
        persisted (None when nothing needs waiting for). Completes the events in place.

        Raises InvalidChangeError or SiteForbiddenError, LogFull, QuarantineFull or
        LogUnavailable; in each case nothing of the request is decided or stored.
        """
        ingest = self.ingest
        created, updated = request.created, request.updated
        count = len(created) + len(updated)
        ingest.validator.check_batch(count)
        unknown_created, unknown_updated, details, size = self._check(request, identity)
        wal = ingest.wal
        if size > wal.free_bytes():
            ingest.metrics.wal_full.inc()
            raise wal.refusal()
        quarantine = ingest.quarantine
        held = len(unknown_created) + len(unknown_updated)
        if held:
            if quarantine is None:
                raise InvalidChangeError(f"{held} change(s) of unknown types: {details[0]}")
            quarantine.check_room(sum(e.ByteSize() for e in (*unknown_created, *unknown_updated)))
        unknown = {e.id for e in (*unknown_created, *unknown_updated)}
        fresh: dict[str, event_pb2.Event] = {}
        recent = ingest.recent
        for event in created:
            event_id = event.id
            if event_id not in unknown and event_id not in recent and event_id not in fresh:
                fresh[event_id] = event
        changed = [e for e in updated if e.id not in unknown]
        duplicates = len(created) - len(unknown_created) - len(fresh)
        response = Response(
            sequence=request.sequence,
            stored_count=len(fresh) + len(changed),
            duplicate_count=duplicates,
            quarantined_count=held,
        )
        persisted: Persisted | None = None
        if fresh or changed:
            serialized = [e.SerializeToString() for e in fresh.values()]
            payload = changelog.encode(serialized, changed, fresh)
            persisted = wal.submit(payload)
            ingest.note_appended(len(fresh) + len(changed), time.time())
            recent.add_many(fresh)
            ingest.metrics.wal_bytes.inc(len(payload))
        elif duplicates:
            persisted = wal.barrier()  # the first copy may still be being persisted
        if held:
            assert quarantine is not None
            holding = quarantine.hold(unknown_created, unknown_updated, details)
            persisted = joined(persisted, holding)
        ingest.metrics.forwarded.inc(len(fresh) + len(changed))
        return response, persisted

    def _check(
        self, request: Request, identity: Identity | None
    ) -> tuple[list[event_pb2.Event], list[event_pb2.Event], list[str], int]:
        """Check every change, fill in the sites; the new events and updates of unknown
        types, why they are unknown, and an upper bound of the record's size."""
        inspect = self.ingest.validator.inspect
        default_site = request.site
        allowed: dict[str, bool] = {}
        unknown: tuple[list[event_pb2.Event], list[event_pb2.Event]] = ([], [])
        details: list[str] = []
        size = _RECORD_OVERHEAD
        lists: Sequence[tuple[str, Sequence[event_pb2.Event], list[event_pb2.Event]]] = (
            ("created", request.created, unknown[0]),
            ("updated", request.updated, unknown[1]),
        )
        for field, events, held in lists:
            for index, event in enumerate(events):
                where = f"{field}[{index}] (event {event.id!r})"
                site = event.site or default_site
                if site not in allowed:
                    allowed[site] = _allowed(site, identity, where)
                if event.count < 1:
                    raise InvalidChangeError(
                        f"{where}: count is {event.count}; a forwarded event counts at least 1"
                    )
                outcome = inspect(event, forwarded=True)
                if isinstance(outcome, tuple):
                    reason = proxy_service_pb2.RejectionReason.Name(outcome[0])
                    raise InvalidChangeError(f"{where}: {reason}: {outcome[1]}")
                if not event.site:
                    event.site = site
                if isinstance(outcome, UnknownType):
                    held.append(event)
                    details.append(outcome.detail)
                    continue
                size += outcome + _GROWTH_PER_EVENT
        return unknown[0], unknown[1], details, size

    async def apply(self, created: list[event_pb2.Event], updated: list[event_pb2.Event]) -> int:
        """Store changes whose events carry their sites already (released from the
        quarantine, at start); returns how many were stored or held."""
        request = Request(created=created, updated=updated)
        response, persisted = self.submit(request, None)
        if persisted is not None:
            await persisted
        return response.stored_count + response.duplicate_count + response.quarantined_count


def _allowed(site: str, identity: Identity | None, where: str) -> bool:
    """True when `identity` may forward for `site`; raises saying why not."""
    if not site:
        raise InvalidChangeError(
            f"{where}: no site: the request names none (ForwardRequest.site) and the event has none"
        )
    problem = site_problem(site)
    if problem is not None:
        raise InvalidChangeError(f"{where}: {problem}")
    if identity is not None and not identity.forwards_for(site):
        raise SiteForbiddenError(
            f"identity {identity.name!r} may not forward events of site {site!r} (its sites: "
            f"{', '.join(identity.sites) or 'none'})"
        )
    return True
