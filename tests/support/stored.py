"""What an event database holds: counts per id, each id stored once, rows."""

from __future__ import annotations

import sqlalchemy as sa


def stored_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, count FROM events")).all()
    finally:
        engine.dispose()
    return {str(row[0]): int(row[1]) for row in rows}


def assert_each_stored_once(url: str, ids: list[str]) -> None:
    """The database holds exactly `ids`, each once (a short summary when it does not: a diff
    of a million ids would take longer than the test)."""
    stored = stored_counts(url)
    missing = sorted(set(ids) - set(stored))
    extra = sorted(set(stored) - set(ids))
    repeated = {event_id: count for event_id, count in stored.items() if count != 1}
    summary = f"{len(missing)} missing {missing[:5]}, {len(extra)} not recorded {extra[:5]}"
    assert (missing, extra, repeated) == ([], [], {}), f"{summary}, counts not 1: {repeated}"


def row_count(url: str) -> int:
    """Rows in `events`; -1 while the database does not answer."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    except sa.exc.OperationalError:
        return -1
    finally:
        engine.dispose()


def stored_sites(url: str) -> dict[str, str]:
    """The site of each stored event ("" for one recorded at that proxy)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, site FROM events")).all()
    finally:
        engine.dispose()
    return {str(row[0]): str(row[1]) for row in rows}
