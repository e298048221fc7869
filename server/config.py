"""The proxy's settings: defaults < TOML file < PROTOEVENTS_* environment < flags, validated."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoevents.proxy.db import DEFAULT_URL

if TYPE_CHECKING:
    # Imported where used: the command line builds its --help from these settings without
    # the writers' modules (and the protobuf runtime they bring).
    from protoevents.proxy.writers.settings import WriterConfig

ENV_PREFIX = "PROTOEVENTS_"
FSYNC_POLICIES = ("batch", "interval", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Settings no message, log line or repr shows.
SECRETS = ("redis_relay_key", "page_token_secret")
# A shorter relay key is refused (HMAC-SHA256 keys are as strong as they are long, to 32).
MIN_RELAY_KEY_BYTES = 16

# The longest Unix socket path the kernel takes (sun_path, less its final NUL).
UNIX_PATH_MAX = 107

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


# Settings that must be greater than 0.
_POSITIVE = (
    "denial_log_interval_s",
    "fsync_interval_ms",
    "wal_segment_bytes",
    "wal_max_bytes",
    "quarantine_max_bytes",
    "dedup_window_s",
    "dedup_max_entries",
    "dedup_max_bytes",
    "writer_batch_events",
    "writer_batch_interval_ms",
    "max_message_bytes",
    "max_ingest_streams",
    "max_streams_per_client",
    "idle_stream_timeout_s",
    "query_timeout_s",
    "query_threads",
    "query_scan_slots",
    "max_watchers",
    "max_batch_events",
    "max_inflight_batches",
    "max_event_message_bytes",
    "max_attributes",
    "max_attribute_bytes",
    "max_data_bytes",
    "max_field_bytes",
    "max_future_s",
    "idempotency_cache_size",
    "watch_queue_size",
    "writer_max_attempts",
    "writer_stuck_after_s",
    "writer_retry_max_s",
)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the key, the value and where it came from."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `protoevents serve` can be told. Field names are the TOML keys; the
    environment variable is PROTOEVENTS_ + the upper-cased name; the flag is --name-with-dashes.
    """

    listen: str = field(
        default="127.0.0.1:50051",
        metadata=_help(
            "host:port to serve gRPC on; an address other than loopback needs TLS "
            "(tls_cert_file, tls_key_file) or insecure"
        ),
    )
    listen_unix: Path | None = field(
        default=None,
        metadata=_help("also serve plaintext gRPC on this Unix socket (recorders: unix:PATH)"),
    )
    insecure: bool = field(
        default=False,
        metadata=_help("allow plaintext gRPC on an address other than loopback (warned)"),
    )
    tls_cert_file: Path | None = field(
        default=None,
        metadata=_help("PEM certificate chain of the gRPC port; re-read when it changes"),
    )
    tls_key_file: Path | None = field(
        default=None, metadata=_help("PEM private key of tls_cert_file; re-read when it changes")
    )
    tls_client_ca_file: Path | None = field(
        default=None,
        metadata=_help("PEM CA certificates: clients must present a certificate they signed"),
    )
    tls_expiry_warning_days: float = field(
        default=14.0,
        metadata=_help("warn (once a day) when the certificate expires within this many days"),
    )
    metrics_listen: str | None = field(
        default=None,
        metadata=_help(
            "host:port to serve Prometheus /metrics and /healthz on over HTTP (default: off)"
        ),
    )
    db: str = field(default=DEFAULT_URL, metadata=_help("database URL of the SQL writer"))
    data_dir: Path = field(
        default=Path("./protoevents-data"), metadata=_help("folder of the write-ahead log")
    )
    fsync: str = field(
        default="batch",
        metadata=_help("batch: ack after an fsync covering the batch; interval; off"),
    )
    fsync_interval_ms: int = field(default=50, metadata=_help("fsync period when fsync=interval"))
    wal_segment_bytes: int = field(default=64 * MiB, metadata=_help("size of one log segment"))
    wal_max_bytes: int = field(
        default=4 * GiB, metadata=_help("log size cap; beyond it ingest answers RESOURCE_EXHAUSTED")
    )
    quarantine_max_bytes: int = field(
        default=1 * GiB,
        metadata=_help(
            "size cap of the quarantine of unknown event types; beyond it batches holding "
            "one answer RESOURCE_EXHAUSTED"
        ),
    )
    dedup_window_s: float = field(default=10.0, metadata=_help("dedup interval, from first seen"))
    dedup_max_entries: int = field(default=100_000, metadata=_help("dedup LRU size"))
    dedup_max_bytes: int = field(
        default=160 * MiB,
        metadata=_help(
            "memory the dedup keys may hold, their first events included; beyond it the "
            "least recently used are forgotten"
        ),
    )
    writer_batch_events: int = field(default=1000, metadata=_help("flush a writer at this size"))
    writer_batch_interval_ms: int = field(
        default=200, metadata=_help("flush a writer this long after its first pending change")
    )
    max_message_bytes: int = field(default=16 * MiB, metadata=_help("gRPC message size limit"))
    max_ingest_streams: int = field(
        default=1024,
        metadata=_help("ingest calls (Record streams, RecordBatch) open at once, all clients"),
    )
    max_streams_per_client: int = field(
        default=64, metadata=_help("ingest calls open at once from one client host")
    )
    idle_stream_timeout_s: float = field(
        default=300.0,
        metadata=_help("a Record stream with no batch for this long is ended (status OK)"),
    )
    query_timeout_s: float = field(
        default=30.0,
        metadata=_help(
            "longest a query may run in the database (a shorter caller deadline wins); "
            "past it the call answers DEADLINE_EXCEEDED"
        ),
    )
    query_threads: int = field(
        default=32, metadata=_help("threads answering ListEvents, GetEvent and ListEventTypes")
    )
    query_scan_slots: int = field(
        default=2,
        metadata=_help(
            "unindexed queries (message_contains, categories) run at once; more wait, "
            "up to half the query threads"
        ),
    )
    max_watchers: int = field(default=1024, metadata=_help("WatchEvents streams open at once"))
    max_batch_events: int = field(default=10_000, metadata=_help("events per batch, at most"))
    max_inflight_batches: int = field(
        default=32, metadata=_help("unacknowledged batches per Record stream")
    )
    max_event_message_bytes: int = field(default=4 * KiB, metadata=_help("event message limit"))
    max_attributes: int = field(default=64, metadata=_help("attributes per event"))
    max_attribute_bytes: int = field(default=1 * KiB, metadata=_help("one attribute key+value"))
    max_data_bytes: int = field(default=64 * KiB, metadata=_help("serialized data payload"))
    max_field_bytes: int = field(default=1 * KiB, metadata=_help("source and object fields, each"))
    max_future_s: float = field(
        default=3600.0, metadata=_help("how far ahead of the proxy's clock an event may be")
    )
    idempotency_cache_size: int = field(
        default=1_000_000, metadata=_help("recent event ids remembered to detect replays")
    )
    shutdown_grace_s: float = field(
        default=10.0, metadata=_help("time streams get to finish and writers to flush at stop")
    )
    writer_max_attempts: int = field(
        default=5,
        metadata=_help(
            "times a writer may refuse a batch for good before its refused changes are set aside"
        ),
    )
    writer_stuck_after_s: float = field(
        default=30.0,
        metadata=_help("a writer failing this long makes health NOT_SERVING"),
    )
    writer_retry_max_s: float = field(
        default=30.0,
        metadata=_help("the longest wait between a failing writer's retries (jittered)"),
    )
    jsonl_path: Path | None = field(
        default=None, metadata=_help("also write every change as a JSON line to this file")
    )
    writers: tuple[WriterConfig, ...] = field(
        default=(),
        metadata={
            "help": "[[writers]] tables of the config file (default: the SQL writer alone)",
            "file_only": True,
        },
    )
    redis_url: str | None = field(
        default=None,
        metadata=_help("redis:// URL: WatchEvents fans out through it across proxies"),
    )
    redis_channel: str = field(
        default="protoevents:changes", metadata=_help("Redis channel of WatchEvents changes")
    )
    redis_relay_key: str | None = field(
        default=None,
        repr=False,
        metadata=_help(
            "shared key signing the changes relayed through redis_channel (HMAC-SHA256), the "
            "same on every proxy of the channel; required with redis_url (or "
            "redis_relay_key_file). Prefer the file or the environment to the flag, which "
            "other users see in the process list"
        ),
    )
    redis_relay_key_file: Path | None = field(
        default=None,
        metadata=_help("file holding redis_relay_key (surrounding whitespace ignored)"),
    )
    watch_queue_size: int = field(
        default=10_000, metadata=_help("changes a watcher may fall behind before it is dropped")
    )
    page_token_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_help(
            "key signing ListEvents page tokens; the same on proxies behind one "
            "address (default: random at each start)"
        ),
    )
    access_file: Path | None = field(
        default=None,
        metadata=_help(
            "TOML file of [[identities]]: who may call (certificate names or token digests), "
            "with which roles, recording which sources; reloaded when it changes and on "
            "SIGHUP (default: none, every call allowed)"
        ),
    )
    denial_log_interval_s: float = field(
        default=60.0,
        metadata=_help(
            "calls and events refused by the access file: one log line per "
            "identity (or peer) per this many seconds; each is counted"
        ),
    )

    log_level: str = field(
        default="info",
        metadata=_help(
            "what serve logs on stderr: debug, info, warning or error; debug also shows the "
            "libraries' own INFO lines (Alembic's migration steps)"
        ),
    )

    @property
    def fsync_interval_s(self) -> float:
        return self.fsync_interval_ms / 1000

    @property
    def writer_batch_interval_s(self) -> float:
        return self.writer_batch_interval_ms / 1000

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated."""
        updated = dataclasses.replace(self, **changes)
        updated.validate()
        return updated

    def validate(self) -> None:
        """Raise SettingsError naming the first key whose value makes no sense."""
        _check_address("listen", self.listen)
        if self.metrics_listen is not None:
            _check_address("metrics_listen", self.metrics_listen)
        self._validate_transport()
        if self.fsync not in FSYNC_POLICIES:
            _bad("fsync", self.fsync, f"expected one of {', '.join(FSYNC_POLICIES)}")
        if self.log_level.lower() not in LOG_LEVELS:
            _bad("log_level", self.log_level, f"expected one of {', '.join(LOG_LEVELS)}")
        if not self.db:
            _bad("db", self.db, "expected a database URL")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                _bad(name, getattr(self, name), "must be greater than 0")
        if self.shutdown_grace_s < 0:
            _bad("shutdown_grace_s", self.shutdown_grace_s, "must not be negative")
        if self.wal_segment_bytes < 64 * KiB:
            _bad("wal_segment_bytes", self.wal_segment_bytes, "must be at least 65536")
        if self.wal_max_bytes < 2 * self.wal_segment_bytes:
            _bad(
                "wal_max_bytes",
                self.wal_max_bytes,
                "must be at least two segments "
                f"(2 x wal_segment_bytes = {2 * self.wal_segment_bytes})",
            )
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            _bad(
                "redis_url", self.redis_url, f"expected a URL starting {' or '.join(REDIS_SCHEMES)}"
            )
        if not self.redis_channel:
            _bad("redis_channel", self.redis_channel, "expected a channel name")
        if self.redis_url is not None:
            self.required_relay_key()
        if self.query_threads < 2:
            _bad("query_threads", self.query_threads, "must be at least 2")
        if self.max_message_bytes < 1 * KiB:
            _bad("max_message_bytes", self.max_message_bytes, "must be at least 1024")
        from protoevents.proxy.writers.settings import effective_writers, parse_writers

        try:
            effective_writers(parse_writers(self.writers), self.jsonl_path)
        except ValueError as exc:
            raise SettingsError(f"setting writers: {exc}", "writers") from None

    def relay_key(self) -> bytes | None:
        """The key signing relayed changes, from redis_relay_key or its file (None when
        neither is set). Raises SettingsError for both, an unreadable file or a short key;
        no message holds the key."""
        if self.redis_relay_key is not None and self.redis_relay_key_file is not None:
            raise SettingsError(
                "settings redis_relay_key and redis_relay_key_file: set one, not both",
                "redis_relay_key",
            )
        key, name = self.redis_relay_key, "redis_relay_key"
        if self.redis_relay_key_file is not None:
            name = "redis_relay_key_file"
            try:
                key = self.redis_relay_key_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(
                    f"setting {name} = '{self.redis_relay_key_file}': cannot read it ({exc})",
                    name,
                ) from None
        if key is None:
            return None
        encoded = key.encode()
        if len(encoded) < MIN_RELAY_KEY_BYTES:
            where = "" if name == "redis_relay_key" else f" in '{self.redis_relay_key_file}'"
            raise SettingsError(
                f"setting {name}: the key{where} has {len(encoded)} bytes, fewer than "
                f"{MIN_RELAY_KEY_BYTES} (make one with `openssl rand -hex 32`)",
                name,
            )
        return encoded

    def required_relay_key(self) -> bytes:
        """The relay key, which the relay (`redis_url`) cannot go without: raises
        SettingsError when neither redis_relay_key nor its file is set."""
        key = self.relay_key()
        if key is None:
            raise SettingsError(
                f"setting redis_url = {self.redis_url!r}: the Redis relay needs "
                "redis_relay_key or redis_relay_key_file (a shared secret of at least "
                f"{MIN_RELAY_KEY_BYTES} bytes, the same on every proxy of the channel; without "
                "it anyone who can publish on the channel feeds every proxy's watchers)",
                "redis_url",
            )
        return key

    def _validate_transport(self) -> None:
        """TLS files come as a whole, and plaintext stays on loopback unless `insecure`."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            key = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            _bad(key, None, "tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            _bad("tls_client_ca_file", str(self.tls_client_ca_file), "needs tls_cert_file")
        if self.tls_expiry_warning_days < 0:
            _bad("tls_expiry_warning_days", self.tls_expiry_warning_days, "must not be negative")
        if self.listen_unix is not None and len(os.fsencode(self.listen_unix)) > UNIX_PATH_MAX:
            _bad("listen_unix", str(self.listen_unix), f"longer than {UNIX_PATH_MAX} bytes")
        if self.tls_cert_file is None and not self.insecure and not is_loopback(self.host):
            _bad(
                "listen",
                self.listen,
                "not a loopback address, and TLS is off: set tls_cert_file and tls_key_file, "
                "or insecure (--insecure) to serve plaintext to the network",
            )

    @property
    def tls_on(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _check_address(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        _bad(key, value, "expected HOST:PORT, such as 127.0.0.1:50051")


def is_loopback(host: str) -> bool:
    """Whether `host` (of HOST:PORT, IPv6 in brackets) names only this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bad(key: str, value: object, why: str) -> None:
    raise SettingsError(f"setting {key} = {value!r}: {why}", key)


_FIELDS = {f.name: f for f in fields(Settings)}
# Settings of earlier versions, and what replaced them.
_REPLACED = {
    "max_concurrent_rpcs": "max_ingest_streams and max_streams_per_client (ingest calls only: "
    "health, queries and watchers are never refused for them)",
}
_COMMAND_LINE_FIELDS = [f.name for f in fields(Settings) if not f.metadata.get("file_only")]


def _convert(key: str, raw: object, source: str) -> object:
    """The value of `raw` for field `key`, converted to the field's type."""
    kind = str(_FIELDS[key].type)
    if key == "writers":
        from protoevents.proxy.writers.settings import parse_writers

        try:
            return parse_writers(raw)
        except ValueError as exc:
            raise SettingsError(f"setting {exc} (from {source})", key) from None
    try:
        if raw is None or (kind.endswith("| None") and raw == ""):
            if kind.endswith("| None"):
                return None
            raise ValueError("a value is required")
        if kind.startswith("Path"):
            if not isinstance(raw, str | Path):
                raise ValueError("expected a path")
            return Path(raw)
        if kind == "bool":
            return _boolean(raw)
        if kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError("expected an integer")
            return int(str(raw).replace("_", ""))
        if kind == "float":
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError("expected a number")
            return float(raw)
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw
    except ValueError as exc:
        shown = "(hidden)" if key in SECRETS else repr(raw)
        raise SettingsError(f"setting {key} = {shown} (from {source}): {exc}") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ValueError(f"expected true or false ({', '.join(_TRUE)} / {', '.join(_FALSE[:-1])})")


def from_sources(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Settings from defaults, then the TOML file, then PROTOEVENTS_* variables, then
    `overrides` (flags; None values are ignored). Raises SettingsError naming the bad key."""
    values: dict[str, object] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as handle:
                table = tomllib.load(handle)
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file} is not valid TOML: {exc}") from None
        for key, raw in table.items():
            if key in _REPLACED:
                raise SettingsError(
                    f"{config_file}: setting {key!r} was replaced by {_REPLACED[key]}", key
                )
            if key not in _FIELDS:
                known = ", ".join(_FIELDS)
                raise SettingsError(f"{config_file}: unknown setting {key!r}; known: {known}")
            values[key] = _convert(key, raw, str(config_file))
            origin[key] = str(config_file)
    env = os.environ if environ is None else environ
    for key in _COMMAND_LINE_FIELDS:
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[key] = _convert(key, env[name], name)
            origin[key] = name
    for key, raw in (overrides or {}).items():
        if raw is not None:
            origin[key] = "--" + key.replace("_", "-")
            values[key] = _convert(key, raw, origin[key])
    settings = Settings(**values)  # type: ignore[arg-type]
    try:
        settings.validate()
    except SettingsError as exc:
        where = origin.get(exc.key, "the defaults")
        raise SettingsError(f"{exc} (from {where})", exc.key) from None
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, plus --config FILE; unset flags leave lower sources in force."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file of settings")
    for f in fields(Settings):
        if f.metadata.get("file_only"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.type == "bool":  # a switch: given, it is on
            text = f.metadata.get("help", "")
            help_text = f"{text} (env {ENV_PREFIX}{f.name.upper()}=true)"
            parser.add_argument(flag, dest=f.name, action="store_const", const=True, help=help_text)
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar="HOST:PORT" if f.name.endswith("listen") else f.name.split("_")[-1].upper(),
            help=_flag_help(f.metadata.get("help", ""), default, f.name),
        )


def _flag_help(text: str, default: object, name: str) -> str:
    """A flag's help: its text, its default (unless the text says it, or there is none),
    and its environment variable."""
    env = f"env {ENV_PREFIX}{name.upper()}"
    if "(default:" in text or default is None:
        return f"{text} ({env})"
    return f"{text} (default: {default}; {env})"


def from_arguments(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed `add_arguments` flags, the file they name and the environment."""
    overrides = {name: getattr(args, name, None) for name in _COMMAND_LINE_FIELDS}
    return from_sources(args.config, environ, overrides)
