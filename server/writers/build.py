"""Writers built from their configs: one per `[[writers]]` table, each behind its filter."""

from __future__ import annotations

from collections.abc import Sequence

from protoevents.proxy.changes import Writer
from protoevents.proxy.writers.base import BuildContext
from protoevents.proxy.writers.filters import filtered
from protoevents.proxy.writers.kinds import KINDS
from protoevents.proxy.writers.settings import WriterConfig


def build_writer(config: WriterConfig, context: BuildContext) -> Writer:
    """The writer `config` describes, built by its kind, filtered."""
    writer = KINDS[config.kind].build(config.options, config.name, context)
    return filtered(writer, config.filter)


def build_writers(configs: Sequence[WriterConfig], context: BuildContext) -> list[Writer]:
    return [build_writer(config, context) for config in configs]
