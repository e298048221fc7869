"""Access files written by tests, and the bearer tokens of their identities."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from protoevents.recorder.token import digest, new_token


@dataclass
class Entry:
    """One `[[identities]]` table; `token` (made when not given) is listed by its digest."""

    name: str
    roles: list[str]
    sources: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    token: str | None = field(default_factory=new_token)
    sites: list[str] = field(default_factory=list)

    def toml(self) -> str:
        lines = [
            "[[identities]]",
            f"name = {json.dumps(self.name)}",
            f"roles = {json.dumps(self.roles)}",
            f"sources = {json.dumps(self.sources)}",
        ]
        if self.sites:
            lines.append(f"sites = {json.dumps(self.sites)}")
        if self.certificates:
            lines.append(f"certificates = {json.dumps(self.certificates)}")
        if self.token is not None:
            lines.append(f"tokens = {json.dumps([digest(self.token)])}")
        return "\n".join(lines) + "\n"


def write_access_file(path: Path, *entries: Entry) -> Path:
    """Write the file at once (a new file renamed over the old: a reader sees one version)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(e.toml() for e in entries))
    os.replace(partial, path)
    return path
