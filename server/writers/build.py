"""Writers built from their configs: one per `[[writers]]` table, each behind its filter."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from server.changes import Writer
from server.jsonl_writer import JsonLinesWriter
from server.writers.filters import filtered
from server.writers.settings import (
    JsonlOptions,
    RedisOptions,
    SqlOptions,
    SyslogOptions,
    WriterConfig,
)


def build_writer(config: WriterConfig, engine: Engine) -> Writer:
    """The writer `config` describes, filtered; SQL writers store through `engine`."""
    options = config.options
    writer: Writer
    if isinstance(options, SqlOptions):
        from server.writers.sql import SqlWriter

        writer = SqlWriter(engine, name=config.name)
    elif isinstance(options, JsonlOptions):
        writer = JsonLinesWriter(options.path, name=config.name)
    elif isinstance(options, SyslogOptions):
        from server.writers.syslog import SyslogWriter

        writer = SyslogWriter(options, name=config.name)
    else:
        assert isinstance(options, RedisOptions)
        from server.writers.redis import RedisWriter

        writer = RedisWriter(options, name=config.name)
    return filtered(writer, config.filter)


def build_writers(configs: Sequence[WriterConfig], engine: Engine) -> list[Writer]:
    return [build_writer(config, engine) for config in configs]
