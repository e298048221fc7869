"""Imports only go down: the recorder stands alone, the proxy's lower layers know nothing of
its services, configuration, command line or gRPC, and watch knows nothing of query."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

# Module (or package) -> what it must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "protoevents.recorder": ("protoevents.proxy", "protoevents.migrations"),
    "protoevents.proxy.watch": (
        "protoevents.proxy.query",
        "protoevents.proxy.app",
        "protoevents.proxy.cli",
    ),
    "protoevents.proxy.writers": (
        "protoevents.proxy.query",
        "protoevents.proxy.app",
        "protoevents.proxy.cli",
        "protoevents.proxy.config",
    ),
    "protoevents.proxy.db": (
        "protoevents.proxy.query",
        "protoevents.proxy.watch",
        "protoevents.proxy.writers",
        "protoevents.proxy.app",
        "protoevents.proxy.cli",
    ),
    **{
        f"protoevents.proxy.{lower}": (
            "protoevents.proxy.config",
            "protoevents.proxy.app",
            "protoevents.proxy.cli",
            "protoevents.proxy.query",
            "protoevents.proxy.watch",
            "protoevents.proxy.writers",
            "protoevents.proxy.db",
            "protoevents.proxy.codegen",
            "protoevents.proxy.access",
            "grpc",  # the caller's identity reaches ingest as plain values (sources.py)
        )
        for lower in (
            "wal",
            "validation",
            "dedup",
            "changelog",
            "changes",
            "fields",
            "ids",
            "sources",
            "ingest",
            "record_cache",
            "backlog",
        )
    },
    "protoevents.proxy.alerts": (
        "protoevents.proxy.app",
        "protoevents.proxy.cli",
        "protoevents.proxy.query",
        "protoevents.proxy.config",
    ),
    "protoevents.proxy.access": (
        "protoevents.proxy.config",
        "protoevents.proxy.app",
        "protoevents.proxy.cli",
        "protoevents.proxy.query",
        "protoevents.proxy.watch",
        "protoevents.proxy.writers",
        "protoevents.proxy.db",
        "protoevents.proxy.ingest",
    ),
}


# Folder of the checkout -> the package it installs as.
INSTALLED = {"server": "protoevents.proxy", "recorder": "protoevents.recorder"}
# Top-level names nothing imports: the folders install inside `protoevents`.
CHECKOUT_NAMES = ("server", "recorder", "migrations")


def module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join([INSTALLED[folder], *(parts[:-1] if parts[-1] == "__init__" else parts)])


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules() -> list[Path]:
    return sorted(p for folder in ("server", "recorder") for p in (ROOT / folder).rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_a_module_imports_nothing_above_it(path: Path) -> None:
    name = module_name(path)
    rules = [banned for owner, banned in FORBIDDEN.items() if within(name, owner)]
    wrong = sorted(
        imported
        for imported in imports_of(path)
        for banned in rules
        for package in banned
        if within(imported, package)
    )
    assert wrong == [], f"{name} imports {wrong}"


def test_the_rules_name_real_modules() -> None:
    names = {module_name(p) for p in modules()}
    for owner in FORBIDDEN:
        assert any(within(n, owner) for n in names), owner


@pytest.mark.parametrize("folder", ["server", "recorder", "migrations", "tests", "bench"])
def test_code_imports_the_installed_names_not_the_folders(folder: str) -> None:
    wrong = sorted(
        f"{path.relative_to(ROOT)}: {imported}"
        for path in (ROOT / folder).rglob("*.py")
        for imported in imports_of(path)
        if any(within(imported, name) for name in CHECKOUT_NAMES)
    )
    assert wrong == []


def imports_of_tests(path: Path) -> set[str]:
    """What a module of tests/ imports of `tests`, relative imports resolved."""
    package = path.relative_to(ROOT).parent.parts
    names = {name for name in imports_of(path) if within(name, "tests")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - node.level + 1]
            names.add(".".join([*base, *([node.module] if node.module else [])]))
    return names


def test_tests_import_only_tests_support() -> None:
    """No module of tests/ (test module, conftest or helper) imports a test module or a
    conftest: what tests share lives in tests/support/."""
    wrong = sorted(
        f"{path.relative_to(ROOT)}: {imported}"
        for path in (ROOT / "tests").rglob("*.py")
        for imported in imports_of_tests(path)
        if not within(imported, "tests.support")
    )
    assert wrong == []
