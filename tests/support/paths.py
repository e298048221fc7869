"""Paths of the checkout, and a copy of its generated/."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def copy_generated(out: Path) -> None:
    """Copy generated/ to `out` (without caches), its links to the hand-written folders still
    pointing to them."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "generated", out, symlinks=True, ignore=ignore)
    for link in (p for p in (out / "protoevents").iterdir() if p.is_symlink()):
        target = (ROOT / "generated" / "protoevents" / link.readlink()).resolve()
        link.unlink()
        link.symlink_to(target)
