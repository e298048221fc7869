"""Compile .proto files into Python modules, gRPC stubs, typing stubs and descriptor sets
(`protoevents gen`). Needs the `gen` extra (grpcio-tools, mypy-protobuf): runtime code does
not import this module."""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

# The FileDescriptorSet, with comments, of a top-level package's protos and their imports,
# written in that package's folder (server/reflection.py serves it).
DESCRIPTOR_SET = "descriptors.binpb"
# Files that generation owns in an output folder: anything else there is left alone.
GENERATED_PATTERNS = (
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*_pb2_grpc.pyi",
    "*.proto",
    DESCRIPTOR_SET,
)
PACKAGE_MARKERS = ("__init__.py", "py.typed")


class CodegenError(Exception):
    """protoc refused the input; the message holds its diagnostics."""


@dataclass(frozen=True)
class Drift:
    """Differences between a generated tree on disk and a fresh generation."""

    missing: list[str]
    stale: list[str]
    extra: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.stale or self.extra)

    def describe(self) -> str:
        lines = [f"missing: {p}" for p in self.missing]
        lines += [f"out of date: {p}" for p in self.stale]
        lines += [f"not produced by the protos: {p}" for p in self.extra]
        return "\n".join(lines)


def builtin_proto_root() -> Path:
    """The folder holding `protoevents/v1/*.proto`, for use as an include path.

    A source checkout has it in protos/; an installed package carries copies of the protos
    beside its generated modules.
    """
    checkout = Path(__file__).resolve().parent.parent / "protos"
    if (checkout / "protoevents" / "v1" / "options.proto").is_file():
        return checkout
    package = Path(str(resources.files("protoevents")))
    return package.parent


def wellknown_root() -> Path:
    """The folder of the well-known .proto files (google/protobuf/*.proto)."""
    return Path(str(resources.files("grpc_tools"))) / "_proto"


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed beside this interpreter (mypy-protobuf's)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise CodegenError(
            f"{name} not found beside {sys.executable}: pip install 'protoevents[gen]'"
        )
    return found


def _proto_files(root: Path) -> list[Path]:
    files = sorted(p.relative_to(root) for p in root.rglob("*.proto"))
    if not files:
        raise CodegenError(f"no .proto files under {root}")
    return files


def _write_descriptor_sets(
    protos: Path, files: list[Path], include_args: list[str], out: Path
) -> None:
    """Write DESCRIPTOR_SET, with source info and imports, for each top-level folder of
    `files` into that folder of `out` (files at the top go into `out` itself)."""
    groups: dict[str, list[Path]] = {}
    for rel in files:
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", []).append(rel)
    for top, members in sorted(groups.items()):
        target = out / top / DESCRIPTOR_SET
        target.parent.mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            *include_args,
            "--include_source_info",
            "--include_imports",
            f"--descriptor_set_out={target}",
            *[str(f) for f in members],
        ]
        if protoc.main(args) != 0:
            raise CodegenError(f"protoc failed on the descriptor set of {protos / top}")


def generate(protos: Path, out: Path, includes: Iterable[Path] = ()) -> None:
    """Generate every .proto under `protos` into the folder `out`, which must be empty."""
    files = _proto_files(protos)
    include_args = [f"-I{protos}"]
    include_args += [f"-I{inc}" for inc in includes if inc.resolve() != protos.resolve()]
    include_args.append(f"-I{wellknown_root()}")
    args = [
        "grpc_tools.protoc",
        *include_args,
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise CodegenError(f"protoc failed on {protos} (see its messages above)")
    _write_descriptor_sets(protos, files, include_args, out)
    for rel in files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(protos / rel, target)
    for folder in {p for p in out.rglob("*") if p.is_dir()}:
        (folder / "__init__.py").touch()
        if folder.parent == out:
            (folder / "py.typed").touch()


def _owned(tree: Path) -> set[str]:
    """The files of `tree` that generation owns. Path.rglob does not descend into linked
    folders, so the links installing server/, recorder/ and migrations/ inside `protoevents`
    are not among them."""
    owned: set[str] = set()
    if not tree.is_dir():
        return owned
    for pattern in (*GENERATED_PATTERNS, *PACKAGE_MARKERS):
        owned.update(str(p.relative_to(tree)) for p in tree.rglob(pattern))
    return owned


def compare(fresh: Path, existing: Path) -> Drift:
    """What differs between a fresh generation and the generated files of `existing`."""
    new, old = _owned(fresh), _owned(existing)
    stale = [p for p in sorted(new & old) if not filecmp.cmp(fresh / p, existing / p, False)]
    return Drift(missing=sorted(new - old), stale=stale, extra=sorted(old - new))


def write(protos: Path, out: Path, includes: Iterable[Path] = ()) -> Drift:
    """Regenerate `out` from `protos`: generated files are replaced as a whole, others kept."""
    with tempfile.TemporaryDirectory(prefix="protoevents-gen-") as tmp:
        fresh = Path(tmp)
        generate(protos, fresh, includes)
        drift = compare(fresh, out)
        for rel in drift.extra:
            (out / rel).unlink()
        for rel in drift.missing + drift.stale:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / rel, out / rel)
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return drift


def check(protos: Path, out: Path, includes: Iterable[Path] = ()) -> Drift:
    """Generate into a temporary folder and report how `out` differs from it."""
    with tempfile.TemporaryDirectory(prefix="protoevents-gen-") as tmp:
        generate(protos, Path(tmp), includes)
        return compare(Path(tmp), out)
