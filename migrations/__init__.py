"""Alembic migrations of the event database; `protoevents.proxy.db.migrate` runs them."""
