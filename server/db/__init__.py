"""The proxy's SQL storage: models, engine, migrations and row conversion.

This package's own module stays free of SQLAlchemy: the command line reads DEFAULT_URL to
build its --help without importing the database layer."""

DEFAULT_URL = "sqlite:///./protoevents.db"
