"""`python -m bench`: run the benchmark suite, print a results table and write it as JSON."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console

from bench.scenarios import SCENARIOS
from bench.suite import (
    Context,
    command_line,
    markdown,
    notes,
    now,
    run_all,
    table,
    to_json,
    write_json,
)

RESULTS = Path(__file__).parent / "results"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def reachable_postgres(url: str) -> tuple[str | None, str]:
    """`(url, "")` when the server answers, else `(None, why)`."""
    if not url:
        return None, "no PostgreSQL server given (--postgres)"
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        where = sa.make_url(url).render_as_string()
        return None, f"PostgreSQL not reachable at {where} ({str(exc).splitlines()[0]})"
    finally:
        engine.dispose()
    return url, ""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    names = [scenario.name for scenario in SCENARIOS]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmark suite: protoevents and its peers in the same run, "
        "medians of several runs, ratios measured side by side, targets checked.",
        epilog="scenarios: " + ", ".join(f"{s.name} ({s.title})" for s in SCENARIOS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and a 30 s soak: a smoke run"
    )
    parser.add_argument(
        "--only", metavar="NAME,...", help=f"run only these scenarios, of: {','.join(names)}"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per measure, median shown (default 3; 5 full)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default bench/results/quick.json or full.json; "
        "'-' for none)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PROTOEVENTS_BENCH_POSTGRES",
            os.environ.get("PROTOEVENTS_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        ),
        help="PostgreSQL server to create scratch databases on ('' to skip PostgreSQL)",
    )
    args = parser.parse_args(argv)
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in names]
        if unknown or not wanted:
            parser.error(f"unknown scenario {','.join(unknown)!r}; known: {','.join(names)}")
        args.scenarios = [s for s in SCENARIOS if s.name in wanted]
    else:
        args.scenarios = list(SCENARIOS)
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    command = command_line(argv)
    # Peers that drop records say so in warnings; the suite counts the drops instead.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    load = os.getloadavg()
    started, clock = now(), time.monotonic()
    err = Console(stderr=True)
    postgres, missing = reachable_postgres(args.postgres)
    context = Context(args.quick, args.runs, postgres, missing)
    outcomes = run_all(args.scenarios, context, err)
    seconds = time.monotonic() - clock
    mode = "quick" if args.quick else "full"
    print(
        f"\n`{command}`: {mode} mode, median of {args.runs} run{'s' * (args.runs != 1)}, "
        f"{seconds:.0f} s, "
        f"{os.cpu_count()} CPUs, load average at start {load[0]:.1f}\n"
    )
    print(markdown(table(outcomes)))
    for line in notes(outcomes):
        print(line)
    if str(args.json) != "-":
        path = args.json or RESULTS / f"{mode}.json"
        write_json(path, to_json(outcomes, command, args.quick, started, seconds, load))
        shown = (
            path.resolve().relative_to(Path.cwd())
            if path.resolve().is_relative_to(Path.cwd())
            else path
        )
        print(f"\nresults written to {shown}")
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
