"""Getting the event database ready for the proxy: reachable, migrated, types synced."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine, sync_event_types
from protoevents.recorder.registry import Registry


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be used; the message names it (password hidden) and the reason."""


def describe(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


def open_database(url: str, registry: Registry) -> Engine:
    """An engine on `url`, migrated to the newest revision, with `registry` synced into the
    event_types table. A database at a revision this version does not know is refused
    (DatabaseRevisionError) before anything is changed."""
    try:
        engine = create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise DatabaseUnavailableError(f"cannot use database {url!r}: {exc}") from None
    try:
        migrate.upgrade(engine)
        sync_event_types(engine, registry)
    except migrate.DatabaseRevisionError:
        engine.dispose()
        raise
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseUnavailableError(f"cannot use database {describe(url)}: {reason}") from None
    return engine
