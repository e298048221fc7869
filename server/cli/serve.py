"""`protoevents serve`: run the proxy until SIGTERM or Ctrl-C, then drain and exit 0."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from protoevents.proxy import config
from protoevents.proxy.cli import demo
from protoevents.proxy.cli.demo import add_demo_arguments
from protoevents.proxy.cli.types import add_module_arguments, load_registry
from protoevents.proxy.config import Settings, SettingsError

if TYPE_CHECKING:
    from protoevents.proxy.ownership import DataDirLock
    from protoevents.recorder.registry import Registry

# Libraries whose INFO lines say nothing a proxy's operator needs (Alembic: three lines per
# migration check at every start): WARNING and above, unless debug logging is asked for.
QUIET_LIBRARIES = ("alembic",)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Receive events from recorders over gRPC, persist them in the write-ahead "
        "log before acknowledging, and hand them to the writers. Settings come from defaults, "
        "then --config FILE (TOML, keys as the flag names with '_'), then PROTOEVENTS_* "
        "variables, then flags. The first line printed is `listening on HOST:PORT`; with "
        "--metrics-listen, the second is `metrics on http://HOST:PORT/metrics`.",
    )
    config.add_arguments(parser)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="first wipe the database and fill it with demo events (see `protoevents demo`)",
    )
    add_demo_arguments(parser)
    add_module_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from protoevents.proxy.ownership import DataDirLock, OwnershipError, address_error, bind_problem
    from protoevents.proxy.writers.settings import check_types
    from protoevents.recorder.registry import RegistryError

    try:
        settings = config.from_arguments(args)
        registry = load_registry(args)
        check_types(settings.writers, registry)
    except (SettingsError, RegistryError, ValueError) as exc:
        print(f"protoevents serve: {exc}", file=sys.stderr)
        return 2
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
        if settings.port != 0 and bind_problem(settings.host.strip("[]"), settings.port):
            raise address_error(settings.listen)
    except OwnershipError as exc:
        lock.release()
        print(f"protoevents serve: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_locked(args, settings, registry, lock)
    finally:
        lock.release()


def _run_locked(
    args: argparse.Namespace, settings: Settings, registry: Registry, lock: DataDirLock
) -> int:
    """The rest of `run`, once this process owns the data directory."""
    import asyncio

    from protoevents.proxy.db.migrate import DatabaseRevisionError
    from protoevents.proxy.db.setup import DatabaseUnavailableError

    configure_logging(settings.log_level)
    if not settings.tls_on and not config.is_loopback(settings.host):
        logging.getLogger(__name__).warning(
            "insecure: serving plaintext gRPC on %s, reachable from the network: anyone who "
            "reaches it can record and read events (set tls_cert_file and tls_key_file)",
            settings.listen,
        )
    if args.demo:
        try:
            stored = demo.fill(settings.db, registry, args.demo_events, args.demo_seed)
        except (DatabaseUnavailableError, DatabaseRevisionError) as exc:
            print(f"protoevents serve: {exc}", file=sys.stderr)
            return 2
        logging.getLogger(__name__).info("demo: stored %d events", stored)
    return asyncio.run(serve(settings, registry, lock))


def configure_logging(level: str) -> None:
    """Log to stderr at `level` (a name, such as "info"), the libraries in QUIET_LIBRARIES
    at WARNING unless `level` is debug."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet = logging.NOTSET if level.lower() == "debug" else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


def settle_garbage_collector() -> None:
    """Move what start-up built out of the collector's sight and collect young objects less
    often: the hot path allocates many short-lived, acyclic objects (protobuf messages,
    changes), which reference counting frees; frequent full traversals only cost time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def serve(settings: Settings, registry: Registry, lock: DataDirLock | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code. `lock`, held by the caller,
    is told the address once the proxy listens."""
    import asyncio

    from protoevents.proxy.access.policy import AccessFileError
    from protoevents.proxy.app import run_proxy
    from protoevents.proxy.db.migrate import DatabaseRevisionError
    from protoevents.proxy.db.setup import DatabaseUnavailableError
    from protoevents.proxy.ownership import OwnershipError
    from protoevents.proxy.tls import TLSConfigError

    loop = asyncio.get_running_loop()
    # A file-size limit (RLIMIT_FSIZE) would kill the process; ignored, the write fails with
    # EFBIG instead and the log holds it until it can write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with run_proxy(settings, registry=registry) as proxy:
            settle_garbage_collector()
            if proxy.access is not None:
                loop.add_signal_handler(signal.SIGHUP, proxy.access.reload)
            if lock is not None:
                lock.describe(address=proxy.address)
            print(f"listening on {proxy.address}", flush=True)
            if proxy.metrics_server is not None:
                print(f"metrics on http://{proxy.metrics_server.address}/metrics", flush=True)
            await stop.wait()
            logging.getLogger(__name__).info("stopping: draining streams and writers")
    except (
        AccessFileError,
        DatabaseUnavailableError,
        DatabaseRevisionError,
        OwnershipError,
        TLSConfigError,
    ) as exc:
        print(f"protoevents serve: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # grpc reports a port it cannot bind as RuntimeError
        print(f"protoevents serve: {exc}", file=sys.stderr)
        return 1
    return 0
