"""The README's recorder example runs as written, as any user, against a proxy."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.commands import run_python
from tests.support.fake_proxy import FakeProxy
from tests.support.paths import ROOT


def test_the_recording_example_runs_as_written_for_any_user(
    fake_proxy: FakeProxy, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Recording events") :]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    code = example[1].replace("127.0.0.1:50051", fake_proxy.address)
    home = tmp_path / "home"  # a user's own home, nothing created beforehand
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("XDG_STATE_HOME", None)
    done = run_python("-c", code, env=env)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.split()[0]
    assert fake_proxy.events[event_id].message == "node-7 is the leader"
    assert (home / ".local" / "state" / "protoevents" / "spool").is_dir()
