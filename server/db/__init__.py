"""The proxy's SQL storage: models, engine, migrations and row conversion."""
