"""The package as `pip install .` installs it, not the checkout: the code generators are an
extra, `serve` runs without them and its reflection serves the protos' comments from the
descriptor set the package ships, and `gen` without them names the extra in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.commands import run_python
from tests.support.grpcurl import grpcurl
from tests.support.paths import ROOT
from tests.support.polling import eventually

GENERATORS = ("grpc_tools", "mypy_protobuf")
# What a build of the package reads from the checkout.
SOURCES = ("pyproject.toml", "README.md", "server", "recorder", "migrations", "generated")
DESCRIPTOR_SET = Path("protoevents", "descriptors.binpb")

# Run first by every script of these tests: modules in BLOCKED are treated as not installed
# (the import system takes a module set to None in sys.modules for a missing one); with
# ISOLATED, the checkout cannot be imported from either: setuptools' editable finder is dropped
# and neither folder of the checkout's packages is on sys.path.
PRELUDE = """
import os, sys
for name in {blocked!r}:
    sys.modules[name] = None
if {isolated!r}:
    sys.meta_path[:] = [
        f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
    ]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p) not in {checkout!r}]
"""

# `protoevents ARGV`.
CLI = """
from protoevents.proxy.cli import main
sys.exit(main(sys.argv[1:]))
"""


def python(code: str, blocked: Sequence[str] = (), isolated: bool = True) -> list[str]:
    """The command line that runs `code` after PRELUDE."""
    checkout = {str(ROOT), str(ROOT / "generated")}
    prelude = PRELUDE.format(blocked=tuple(blocked), isolated=isolated, checkout=checkout)
    return [sys.executable, "-c", prelude + code]


def wrapped(blocked: Sequence[str], isolated: bool) -> list[str]:
    """The command line that runs `protoevents` (append its arguments)."""
    return python(CLI, blocked, isolated)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed, not editable, into a folder of its own (without dependencies:
    those of the test environment serve). Built from a copy, so the checkout gets no build/."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    site = tmp / "site"
    done = run_python(
        *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
        *("--no-deps", "--no-build-isolation", "--no-index", "--target", str(site)),
        str(source),
        cwd=tmp,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return site


@pytest.fixture
def serve_installed(installed: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`protoevents serve` of the installed package, without the generators, run from a folder
    outside the checkout; killed after the test if still running."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process = subprocess.Popen(
        [
            *wrapped(GENERATORS, isolated=True),
            *("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")),
            *("--db", f"sqlite:///{tmp_path / 'events.db'}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(installed), "PYTHONUNBUFFERED": "1"},
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def run_installed(
    installed: Path, command: list[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`command` run from `cwd` with the installed package, and not the checkout, importable."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(installed)},
        timeout=120,
        check=False,
    )


def test_the_package_installs_one_namespace(installed: Path, tmp_path: Path) -> None:
    tops = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")}
    assert tops - {"bin"} == {"protoevents"}
    where = run_installed(
        installed,
        python(
            "import protoevents.proxy.app, protoevents.recorder, protoevents.migrations\n"
            "print(protoevents.proxy.app.__file__)"
        ),
        tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed)
    for name in ("server", "recorder", "migrations"):
        done = run_installed(installed, python(f"import {name}"), tmp_path)
        assert done.returncode == 1
        assert f"ModuleNotFoundError: No module named '{name}'" in done.stderr


def readme_recorder_example() -> str:
    """The Python example of the README's "Recording events" section."""
    section = (ROOT / "README.md").read_text().split("## Recording events", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_an_installed_package_runs_types_and_the_readme_recorder_example(
    installed: Path, serve_installed: subprocess.Popen[str], tmp_path: Path
) -> None:
    types = run_installed(installed, [*wrapped(GENERATORS, isolated=True), "types"], tmp_path)
    assert types.returncode == 0, types.stderr
    assert "CLUSTER_EVENT_TYPE_LEADER_ELECTED" in types.stdout

    assert serve_installed.stdout is not None
    first = serve_installed.stdout.readline()
    assert first.startswith("listening on "), first + serve_installed.communicate()[1]
    address = first.removeprefix("listening on ").strip()
    example = readme_recorder_example()
    assert 'proxy="127.0.0.1:50051"' in example
    example = example.replace('proxy="127.0.0.1:50051"', f"proxy={address!r}")
    env_spool = f"os.environ['XDG_STATE_HOME'] = {str(tmp_path / 'state')!r}\n"
    recorded = run_installed(installed, python(env_spool + example, GENERATORS), tmp_path)
    assert recorded.returncode == 0, recorded.stderr

    query = [*wrapped(GENERATORS, isolated=True), "query", "--proxy", address, "--json"]
    events: list[dict[str, str]] = []

    def stored() -> bool:
        done = run_installed(installed, query, tmp_path)
        assert done.returncode == 0, done.stderr
        events[:] = [json.loads(line) for line in done.stdout.splitlines()]
        return bool(events)

    eventually(stored)  # acknowledged once logged; the SQL writer follows
    assert [e["message"] for e in events] == ["node-7 is the leader"]
    assert events[0]["id"] == recorded.stdout.split()[0]


def test_the_generators_are_an_extra_of_the_installed_metadata(installed: Path) -> None:
    metadata = next(installed.glob("protoevents-*.dist-info")) / "METADATA"
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.read_text().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    runtime = [r for r in requires if "extra ==" not in r]
    assert "grpcio-reflection" in " ".join(runtime)
    for name in ("grpcio-tools", "mypy-protobuf", "types-"):
        assert not [r for r in runtime if r.startswith(name)], runtime
    gen = sorted(r.split(";")[0] for r in requires if 'extra == "gen"' in r)
    assert gen == ["grpcio-tools>=1.85.1", "mypy-protobuf>=5.1.0"]
    assert 'protoevents[gen]; extra == "dev"' in requires
    assert (installed / DESCRIPTOR_SET).read_bytes() == (
        ROOT / "generated" / DESCRIPTOR_SET
    ).read_bytes()


def test_an_installed_serve_describes_with_comments_and_no_compiler(
    serve_installed: subprocess.Popen[str],
) -> None:
    assert serve_installed.stdout is not None
    first = serve_installed.stdout.readline()
    assert first.startswith("listening on "), first + serve_installed.communicate()[1]
    address = first.removeprefix("listening on ").strip()

    described = grpcurl(address, "describe", "protoevents.v1.EventFilter")
    assert "// Lowest severity to include." in described
    query = grpcurl(address, "describe", "protoevents.v1.EventQueryService")
    assert "// Reads stored events and the event-type registry." in query

    serve_installed.send_signal(signal.SIGTERM)
    _, errors = serve_installed.communicate(timeout=60)
    assert serve_installed.returncode == 0, errors
    assert "already defined" not in errors
    assert "reflection:" not in errors


@pytest.mark.parametrize(
    ("blocked", "names"),
    [
        (("grpc_tools",), "grpcio-tools"),
        (("mypy_protobuf",), "mypy-protobuf"),
        (GENERATORS, "grpcio-tools and mypy-protobuf"),
    ],
    ids=["grpcio-tools", "mypy-protobuf", "both"],
)
def test_gen_without_the_generators_names_the_extra_in_one_line(
    blocked: tuple[str, ...], names: str
) -> None:
    for args in (("gen",), ("gen", "--check")):
        done = subprocess.run(
            [*wrapped(blocked, isolated=False), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (
            f"protoevents gen: {names} not installed: pip install 'protoevents[gen]'\n"
        )


# Imports every module of the runtime packages with the generators blocked, then reports
# which modules of code generation were loaded, and the files reflection documents.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None
import protoevents.proxy as server, protoevents.recorder as recorder
codegen = ("protoevents.proxy.codegen", "protoevents.proxy.cli.gen")
imported = []
for package in (server, recorder):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name not in codegen and not module.name.endswith("__main__"):
            imported.append(importlib.import_module(module.name).__name__)
from protoevents.proxy.reflection import documented_files
print(json.dumps({{
    "imported": imported,
    "codegen": [m for m in codegen if m in sys.modules],
    "documented": sorted(documented_files()),
}}))
"""


def test_runtime_modules_import_neither_the_generators_nor_codegen() -> None:
    done = run_python("-c", IMPORT_ALL.format(blocked=GENERATORS), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {
        "protoevents.proxy.app",
        "protoevents.proxy.reflection",
        "protoevents.proxy.cli.serve",
    } <= set(report["imported"])
    assert report["codegen"] == []
    assert "protoevents/v1/query_service.proto" in report["documented"]
    assert "google/protobuf/timestamp.proto" in report["documented"]
