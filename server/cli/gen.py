"""`protoevents gen`: compile protos into Python modules, or check that they are current."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

# The code generators `gen` runs, by module, with the distribution of each: the `gen` extra.
GENERATORS = {"grpc_tools": "grpcio-tools", "mypy_protobuf": "mypy-protobuf"}


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "gen",
        help="compile .proto files into Python modules",
        description="Compile every .proto under --protos into --out: messages, gRPC stubs, "
        ".pyi stubs, and per top-level package a descriptor set with the comments, which "
        "reflection serves. Generated files in --out are replaced as a whole; other files are "
        "kept. The protoevents protos (options, severity) are on the include path. Needs the "
        "gen extra: pip install 'protoevents[gen]'.",
    )
    parser.add_argument("--protos", type=Path, default=Path("protos"), help="default: protos")
    parser.add_argument("--out", type=Path, default=Path("generated"), help="default: generated")
    parser.add_argument(
        "-I", "--include", type=Path, action="append", default=[], help="extra include folder"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 naming the files when --out is not what --protos generate",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    missing = [dist for module, dist in GENERATORS.items() if not importlib.util.find_spec(module)]
    if missing:
        print(
            f"protoevents gen: {' and '.join(missing)} not installed: "
            "pip install 'protoevents[gen]'",
            file=sys.stderr,
        )
        return 2
    from protoevents.proxy import codegen

    if not args.protos.is_dir():
        print(f"protoevents gen: --protos {args.protos} is not a folder", file=sys.stderr)
        return 2
    includes = [*args.include, codegen.builtin_proto_root()]
    try:
        if args.check:
            drift = codegen.check(args.protos, args.out, includes)
            if drift:
                print(f"{args.out} is out of date with {args.protos}:", file=sys.stderr)
                print(drift.describe(), file=sys.stderr)
                print("run `protoevents gen` and commit the result", file=sys.stderr)
                return 1
            print(f"{args.out} is up to date with {args.protos}")
            return 0
        drift = codegen.write(args.protos, args.out, includes)
    except codegen.CodegenError as exc:
        print(f"protoevents gen: {exc}", file=sys.stderr)
        return 1
    changed = len(drift.missing) + len(drift.stale) + len(drift.extra)
    print(f"generated {args.out} from {args.protos} ({changed} files changed)")
    return 0
