"""Which event sources (node and component) a caller may claim: `NODE/COMPONENT` patterns."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a source pattern (None when it is one)."""
    node, sep, component = pattern.partition("/")
    if not sep or not node or not component:
        return f"{pattern!r} is not NODE/COMPONENT (globs allowed, such as 'lab-*/instrument-*')"
    return None


@dataclass(frozen=True, slots=True)
class SourceClaims:
    """The sources `identity` may claim, as `NODE/COMPONENT` fnmatch patterns (the node part
    is matched against the node and the component part against the component, each whole,
    case-sensitive)."""

    identity: str
    patterns: tuple[str, ...]
    _split: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        split = tuple(tuple(p.split("/", 1)) for p in self.patterns)
        object.__setattr__(self, "_split", split)

    @property
    def unrestricted(self) -> bool:
        """Whether every source is allowed (a `*/*` pattern): nothing to check per event."""
        return "*/*" in self.patterns

    def allows(self, node: str, component: str) -> bool:
        return any(fnmatchcase(node, n) and fnmatchcase(component, c) for n, c in self._split)
