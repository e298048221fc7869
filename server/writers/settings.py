"""The `[[writers]]` tables of the config file, parsed into typed, validated writer configs."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recorder.registry import Registry, parse_severity
from server.writers.filters import WriterFilter

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILTER_KEYS = ("min_severity", "categories", "types")

# Syslog facilities by name (RFC 5424 section 6.2.1).
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}
SYSLOG_FORMATS = ("rfc5424", "rfc3164")
SYSLOG_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}
REDIS_SCHEMES = ("redis", "rediss", "unix")


class WriterConfigError(ValueError):
    """A writer option has a bad value."""

    def __init__(self, key: str, value: object, why: str) -> None:
        shown = str(value) if isinstance(value, Path) else value
        super().__init__(f"{key} = {shown!r}: {why}")
        self.key = key


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """(host, port) of `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`."""
    host, port = address, str(default_port)
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected HOST:PORT or [IPV6]:PORT")
        port = rest[1:] or port
    elif address.count(":") == 1:
        host, port = address.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT or [IPV6]:PORT with a port from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class SqlOptions:
    """The SQL writer stores into the proxy's database (the `db` setting)."""

    def validate(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class JsonlOptions:
    """Every change as a JSON line appended to `path`."""

    path: Path

    def validate(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SyslogOptions:
    """Syslog messages to one collector (see server/writers/syslog.py)."""

    address: str
    format: str = "rfc5424"
    transport: str = "udp"
    facility: str = "user"
    app_name: str = "protoevents"
    enterprise_number: int = 32473
    max_datagram_bytes: int = 2048
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None
    connect_timeout_s: float = 5.0
    write_timeout_s: float = 30.0

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility] if self.facility in FACILITIES else int(self.facility)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_address(self.address, SYSLOG_PORTS[self.transport])

    def validate(self) -> None:
        if self.transport not in SYSLOG_PORTS:
            raise WriterConfigError("transport", self.transport, "expected udp, tcp or tls")
        if self.format not in SYSLOG_FORMATS:
            raise WriterConfigError("format", self.format, "expected rfc5424 or rfc3164")
        try:
            self.host_port  # noqa: B018 - parses the address
        except ValueError as exc:
            raise WriterConfigError("address", self.address, str(exc)) from None
        number = self.facility.isdigit() and int(self.facility) < 24
        if self.facility not in FACILITIES and not number:
            raise WriterConfigError(
                "facility", self.facility, f"expected 0-23 or one of {', '.join(FACILITIES)}"
            )
        if not 1 <= len(self.app_name) <= 48 or not all(33 <= ord(c) <= 126 for c in self.app_name):
            raise WriterConfigError(
                "app_name", self.app_name, "expected 1 to 48 printable ASCII characters, no space"
            )
        if self.enterprise_number <= 0:
            raise WriterConfigError(
                "enterprise_number", self.enterprise_number, "must be greater than 0"
            )
        if self.max_datagram_bytes < 480:
            raise WriterConfigError(
                "max_datagram_bytes",
                self.max_datagram_bytes,
                "must be at least 480 (RFC 5426: every receiver takes 480 octets)",
            )
        for key in ("connect_timeout_s", "write_timeout_s"):
            if getattr(self, key) <= 0:
                raise WriterConfigError(key, getattr(self, key), "must be greater than 0")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise WriterConfigError(
                "tls_key_file", self.tls_key_file, "tls_cert_file and tls_key_file go together"
            )
        tls_only = ("tls_ca_file", "tls_cert_file", "tls_server_name")
        for key in tls_only:
            if getattr(self, key) is not None and self.transport != "tls":
                raise WriterConfigError(key, getattr(self, key), "only used with transport tls")
        if self.transport == "tls":
            self.ssl_context()  # reads the files now, so a bad one stops the start

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context: the system CAs or `tls_ca_file`, hostname checks unless
        `tls_verify` is false, a client certificate when given."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca_file) if self.tls_ca_file else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise WriterConfigError("tls_ca_file", str(self.tls_ca_file), str(exc)) from None
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            try:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            except (OSError, ssl.SSLError) as exc:
                cert = str(self.tls_cert_file)
                raise WriterConfigError("tls_cert_file", cert, str(exc)) from None
        return context


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Recent events per source and a pub/sub channel of changes (server/writers/redis.py)."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "protoevents"
    recent_max: int = 1000
    channel: str = "protoevents:changes"
    publish: bool = True
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0

    def validate(self) -> None:
        if urlsplit(self.url).scheme not in REDIS_SCHEMES:
            raise WriterConfigError(
                "url", self.url, "expected a redis://, rediss:// or unix:// URL"
            )
        if not self.key_prefix:
            raise WriterConfigError("key_prefix", self.key_prefix, "must not be empty")
        if self.publish and not self.channel:
            raise WriterConfigError("channel", self.channel, "must not be empty")
        for key in ("recent_max", "connect_timeout_s", "timeout_s"):
            if getattr(self, key) <= 0:
                raise WriterConfigError(key, getattr(self, key), "must be greater than 0")


WriterOptions = SqlOptions | JsonlOptions | SyslogOptions | RedisOptions
KINDS: dict[str, type[WriterOptions]] = {
    "sql": SqlOptions,
    "jsonl": JsonlOptions,
    "syslog": SyslogOptions,
    "redis": RedisOptions,
}


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """One configured writer: its name (also its bookmark in the log), what it passes on,
    and the options of its kind."""

    name: str
    options: WriterOptions
    filter: WriterFilter = field(default_factory=WriterFilter)

    @property
    def kind(self) -> str:
        return next(k for k, cls in KINDS.items() if isinstance(self.options, cls))


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
    cls = KINDS[kind]
    option_fields = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ("kind", "name", *FILTER_KEYS):
            continue
        if key not in option_fields:
            known = ", ".join(["name", "kind", *FILTER_KEYS, *option_fields])
            raise WriterConfigError(key, raw, f"unknown key for a {kind} writer; known: {known}")
        number = key == "facility" and isinstance(raw, int) and not isinstance(raw, bool)
        values[key] = _convert(key, str(option_fields[key].type), str(raw) if number else raw)
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
    configs = list(configured) or [WriterConfig("sql", SqlOptions())]
    if jsonl_path is not None:
        configs.append(WriterConfig("jsonl", JsonlOptions(jsonl_path)))
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
