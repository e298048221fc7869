"""Alembic migrations of the event database; `server.db.migrate` runs them."""
