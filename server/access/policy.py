"""The access file: `[[identities]]`, each with roles, sources and how it is proven."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from protoevents.proxy.sources import SourceClaims, pattern_problem

ROLES = ("record", "query", "watch", "forward", "admin")
_KEYS = ("name", "roles", "sources", "sites", "certificates", "tokens")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*identities[ \t]*\]\]", re.MULTILINE)


class AccessFileError(ValueError):
    """The access file cannot be used; the message names the file, line, identity and fault."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One `[[identities]]` table. `sites`: the sites it may forward events of (fnmatch
    globs; a proxy of a chain forwards for the sites behind it too); `certificates` are SAN
    patterns (URIs or DNS names, fnmatch globs); `tokens` the sha256 hex digests of its
    bearer tokens."""

    name: str
    roles: frozenset[str]
    sources: SourceClaims
    certificates: tuple[str, ...] = ()
    tokens: frozenset[str] = frozenset()
    sites: tuple[str, ...] = ()

    def proven_by_names(self, names: list[str]) -> bool:
        """Whether one of a certificate's SANs matches one of the identity's patterns."""
        return any(fnmatchcase(n, p) for p in self.certificates for n in names)

    def forwards_for(self, site: str) -> bool:
        """Whether the identity may forward events that came through `site`."""
        return any(fnmatchcase(site, pattern) for pattern in self.sites)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The identities of one access file, as read."""

    identities: tuple[Identity, ...]

    def by_token_digest(self, digest: str) -> Identity | None:
        return next((i for i in self.identities if digest in i.tokens), None)

    def by_certificate(self, names: list[str]) -> Identity | None:
        """The first identity (in file order) a certificate with these SANs proves."""
        return next((i for i in self.identities if i.proven_by_names(names)), None)


def load(path: Path) -> AccessPolicy:
    """Read the access file at `path`; raises AccessFileError saying what is wrong where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessFileError(f"cannot read access file {path}: {exc}") from None
    return parse(text, str(path))


def parse(text: str, where: str) -> AccessPolicy:
    """The policy of access-file `text` (`where` names it in errors)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AccessFileError(f"access file {where} is not valid TOML: {exc}") from None
    unknown = sorted(set(table) - {"identities"})
    if unknown:
        raise AccessFileError(
            f"access file {where}: unknown key {unknown[0]!r}; expected [[identities]] tables"
        )
    tables = table.get("identities", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise AccessFileError(f"access file {where}: identities must be [[identities]] tables")
    lines = [text.count("\n", 0, m.start()) + 1 for m in _HEADER.finditer(text)]
    identities: list[Identity] = []
    for number, raw in enumerate(tables):
        line = lines[number] if number < len(lines) else 0
        at = f"{where}:{line}" if line else where
        identities.append(_identity(raw, at, number + 1))
    names = [i.name for i in identities]
    for name in names:
        if names.count(name) > 1:
            raise AccessFileError(f"access file {where}: identity {name!r} is named twice")
    return AccessPolicy(tuple(identities))


def _identity(raw: dict[str, object], at: str, number: int) -> Identity:
    """One identity table; errors say `at` (file:line) and which identity."""
    name = raw.get("name")
    who = f"identity {name!r}" if isinstance(name, str) and name else f"identity #{number}"

    def bad(why: str) -> AccessFileError:
        return AccessFileError(f"{at}: {who}: {why}")

    for key in raw:
        if key not in _KEYS:
            raise bad(f"unknown key {key!r}; expected {', '.join(_KEYS)}")
    if not isinstance(name, str) or not name:
        raise bad("name: expected a non-empty string")
    roles = _strings(raw, "roles", bad)
    for role in roles:
        if role not in ROLES:
            raise bad(f"roles: unknown role {role!r}; expected some of {', '.join(ROLES)}")
    sources = _strings(raw, "sources", bad)
    for pattern in sources:
        problem = pattern_problem(pattern)
        if problem is not None:
            raise bad(f"sources: {problem}")
    sites = _strings(raw, "sites", bad)
    if sites and "forward" not in roles:
        raise bad("sites: only an identity with role 'forward' forwards for sites")
    certificates = _strings(raw, "certificates", bad)
    tokens = _strings(raw, "tokens", bad)
    for position, token in enumerate(tokens, 1):
        if _SHA256.fullmatch(token) is None:
            raise bad(
                f"tokens: entry {position} is not a sha256 hex digest (64 characters 0-9a-f, "
                "as `protoevents token` prints): the file holds digests, never tokens"
            )
    if not certificates and not tokens:
        raise bad("nothing proves it: give certificates (SAN names) or tokens (sha256 hex)")
    return Identity(
        name,
        frozenset(roles),
        SourceClaims(name, tuple(sources)),
        tuple(certificates),
        frozenset(tokens),
        tuple(sites),
    )


def _strings(raw: dict[str, object], key: str, bad: Callable[[str], AccessFileError]) -> list[str]:
    """The list of strings under `key` (empty when absent); the value is not echoed (it
    may be a token pasted by mistake)."""
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise bad(f"{key}: expected a list of strings, got a {_toml_kind(value)}")
    for position, item in enumerate(value, 1):
        if not isinstance(item, str) or not item:
            raise bad(f"{key}: entry {position} is not a non-empty string")
    return value


def _toml_kind(value: object) -> str:
    return {str: "string", int: "integer", float: "float", bool: "boolean", dict: "table"}.get(
        type(value), type(value).__name__
    )
