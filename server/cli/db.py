"""`protoevents db upgrade`: migrate the event database to this version's schema."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from protoevents.proxy.db import DEFAULT_URL


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "db",
        help="manage the event database",
        description="Manage the event database (SQLite or PostgreSQL).",
    )
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = actions.add_parser(
        "upgrade",
        help="run the migrations up to this version's schema",
        description="Create the tables of a fresh database, or migrate an older one. A "
        "database migrated by a newer protoevents is refused and left unchanged.",
    )
    upgrade.add_argument(
        "--db",
        type=database_url,
        default=DEFAULT_URL,
        metavar="URL",
        help=f"database URL, e.g. postgresql+psycopg://user@127.0.0.1/db (default {DEFAULT_URL})",
    )
    upgrade.set_defaults(run=run)


def database_url(text: str) -> str:
    """An argparse type: `text` if it parses as a SQLAlchemy database URL."""
    import sqlalchemy as sa

    try:
        sa.make_url(text)
    except sa.exc.ArgumentError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a database URL (e.g. sqlite:///./protoevents.db or "
            "postgresql+psycopg://user@127.0.0.1/db)"
        ) from None
    return text


def run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from protoevents.proxy.db import migrate

    shown = sa.make_url(args.db).render_as_string(hide_password=True)
    try:
        before = migrate.current_revision(args.db)
        after = migrate.upgrade(args.db)
    except migrate.DatabaseRevisionError as exc:
        print(f"protoevents db upgrade: {exc}", file=sys.stderr)
        return 2
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"protoevents db upgrade: cannot use {shown}: {reason}", file=sys.stderr)
        return 2
    if before == after:
        print(f"{shown}: already at revision {after} (newest)")
    else:
        print(f"{shown}: migrated from {before or 'an empty database'} to revision {after}")
    return 0
