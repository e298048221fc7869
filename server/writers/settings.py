"""The `[[writers]]` tables of the config file, parsed into typed, validated writer configs:
the keys every writer has (kind, name, filter) here, those of each kind in its module."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from protoevents.proxy.writers.base import WriterConfigError, WriterOptions
from protoevents.proxy.writers.filters import WriterFilter
from protoevents.proxy.writers.kinds import KINDS, kind_of
from protoevents.recorder.registry import Registry, parse_severity

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILTER_KEYS = ("min_severity", "categories", "types")


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """One configured writer: its name (also its bookmark in the log), what it passes on,
    and the options of its kind."""

    name: str
    options: WriterOptions
    filter: WriterFilter = field(default_factory=WriterFilter)

    @property
    def kind(self) -> str:
        return kind_of(self.options)


def _convert(key: str, kind: str, raw: object) -> object:
    """`raw` (a TOML value) as a field of type `kind` (its annotation text)."""
    optional = kind.endswith("| None")
    kind = kind.removesuffix(" | None")
    if kind in ("str", "Path"):
        if not isinstance(raw, str) or (kind == "Path" and not raw):
            raise WriterConfigError(key, raw, "expected a string" if kind == "str" else "a path")
        return Path(raw) if kind == "Path" else raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise WriterConfigError(key, raw, "expected true or false")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise WriterConfigError(key, raw, "expected an integer")
        return raw
    if kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise WriterConfigError(key, raw, "expected a number")
        return float(raw)
    raise AssertionError(f"no conversion for {kind} (optional: {optional})")


def _strings(key: str, raw: object) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise WriterConfigError(key, raw, "expected a list of non-empty strings")
    return frozenset(raw)


def _filter(table: Mapping[str, object]) -> WriterFilter:
    min_severity = 0
    if "min_severity" in table:
        raw = table["min_severity"]
        try:
            if not isinstance(raw, str):
                raise ValueError("expected a severity name such as WARNING")
            min_severity = parse_severity(raw)
        except ValueError as exc:
            raise WriterConfigError("min_severity", raw, str(exc)) from None
    return WriterFilter(
        min_severity=min_severity,
        categories=_strings("categories", table["categories"])
        if "categories" in table
        else (frozenset()),
        types=_strings("types", table["types"]) if "types" in table else frozenset(),
    )


def parse_writer(table: Mapping[str, Any]) -> WriterConfig:
    """One `[[writers]]` table as a WriterConfig; raises WriterConfigError naming the key."""
    kind = table.get("kind")
    if kind not in KINDS:
        raise WriterConfigError("kind", kind, f"expected one of {', '.join(KINDS)}")
    name = table.get("name", kind)
    if not isinstance(name, str) or not NAME.match(name):
        raise WriterConfigError(
            "name", name, "expected letters, digits, '_', '.' or '-' (at most 64)"
        )
    cls = KINDS[kind].options
    option_fields = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ("kind", "name", *FILTER_KEYS):
            continue
        if key not in option_fields:
            known = ", ".join(["name", "kind", *FILTER_KEYS, *option_fields])
            raise WriterConfigError(key, raw, f"unknown key for a {kind} writer; known: {known}")
        option = option_fields[key]
        number = isinstance(raw, int) and not isinstance(raw, bool)
        text = number and option.metadata.get("integer_as_text", False)
        values[key] = _convert(key, str(option.type), str(raw) if text else raw)
    for key, option in option_fields.items():
        if key not in values and option.default is MISSING:
            raise WriterConfigError(key, None, f"required for a {kind} writer")
    options = cls(**values)
    options.validate()
    return WriterConfig(name=name, options=options, filter=_filter(table))


def parse_writers(raw: object) -> tuple[WriterConfig, ...]:
    """The `writers` array of tables; raises ValueError naming the writer and the key."""
    if not isinstance(raw, list | tuple):
        raise ValueError("writers must be an array of tables ([[writers]])")
    configs: list[WriterConfig] = []
    for index, table in enumerate(raw):
        if isinstance(table, WriterConfig):
            configs.append(table)
            continue
        label = f"writers[{index}]"
        if not isinstance(table, Mapping):
            raise ValueError(f"{label} must be a table")
        if "name" in table:
            label += f" ({table['name']!r})"
        try:
            configs.append(parse_writer(table))
        except WriterConfigError as exc:
            raise ValueError(f"{label}: {exc}") from None
    check_names(configs)
    return tuple(configs)


def check_names(configs: Sequence[WriterConfig]) -> None:
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ValueError(
                f"two writers are named {config.name!r}: give each a unique name "
                "(it is also the writer's bookmark in the log)"
            )
        seen.add(config.name)


def effective_writers(
    configured: Sequence[WriterConfig], jsonl_path: Path | None
) -> list[WriterConfig]:
    """The writers a proxy runs: the configured ones (SQL alone when none is), plus a JSON
    lines writer named `jsonl` when `jsonl_path` is set."""
    configs = list(configured) or [parse_writer({"kind": "sql"})]
    if jsonl_path is not None:
        configs.append(parse_writer({"kind": "jsonl", "path": str(jsonl_path)}))
    check_names(configs)
    return configs


def check_types(configs: Sequence[WriterConfig], registry: Registry) -> None:
    """Raise ValueError when a writer filter names an unknown or ambiguous event type."""
    for config in configs:
        for name in sorted(config.filter.types):
            try:
                registry.lookup(name)
            except KeyError as exc:
                raise ValueError(f"writer {config.name!r}: types: {exc.args[0]}") from None
