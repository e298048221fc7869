"""The shipped buf.gen.yaml gives every proto file the options other languages' generators
need (go_package, java_package, csharp_namespace, ...), through buf's managed mode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from protoevents.v1 import event_pb2
from tests.support.paths import ROOT
from tests.support.unavailable import unavailable

DUMP_PLUGIN = Path(__file__).parent / "plugins" / "protoc-gen-dump-options"


def buf() -> str:
    found = shutil.which("buf") or ROOT / ".ci" / ".buf" / "node_modules" / ".bin" / "buf"
    if not Path(found).is_file():
        unavailable("buf is not installed: npm install --prefix .ci/.buf @bufbuild/buf")
    return str(found)


def generated_options(tmp_path: Path) -> dict[str, dict[str, object]]:
    """Run `buf generate` with the shipped template's managed mode and a plugin that writes
    the file options it is given."""
    template = (ROOT / "buf.gen.yaml").read_text()
    managed = template[: template.index("\nplugins:")]
    plugin = json.dumps([sys.executable, str(DUMP_PLUGIN)])
    (tmp_path / "buf.gen.yaml").write_text(
        f"{managed}\nplugins:\n  - local: {plugin}\n    out: dump\n    strategy: all\n"
    )
    subprocess.run(
        [buf(), "generate", "--template", str(tmp_path / "buf.gen.yaml"), "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    options: dict[str, dict[str, object]] = json.loads((tmp_path / "dump/options.json").read_text())
    return options


def test_every_proto_file_gets_the_options_of_other_languages_generators(
    tmp_path: Path,
) -> None:
    options = generated_options(tmp_path)
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    assert sorted(options) == protos
    for name, got in options.items():
        folder = name.rsplit("/", 1)[0]  # protoevents/nic/v1
        package = folder.replace("/", ".")
        parts = folder.split("/")
        assert got["go_package"] == (
            f"github.com/protoevents/protoevents/gen/go/{folder};{parts[-2]}{parts[-1]}"
        ), name
        assert got["java_package"] == f"com.{package}", name
        assert got["java_multiple_files"] is True, name
        stem = name.rsplit("/", 1)[1].removesuffix(".proto")
        camel = "".join(word.capitalize() for word in stem.split("_"))
        assert got["java_outer_classname"] == f"{camel}Proto", name
        assert got["csharp_namespace"] == ".".join(p.capitalize() for p in parts), name
        assert got["php_namespace"] == "\\".join(p.capitalize() for p in parts), name
        assert got["ruby_package"] == "::".join(p.capitalize() for p in parts), name
        assert len(str(got["objc_class_prefix"])) >= 3, name


def test_python_modules_keep_their_package() -> None:
    """The options live only in the template: the Python modules are unchanged by them."""
    assert event_pb2.DESCRIPTOR.GetOptions().go_package == ""
    assert event_pb2.DESCRIPTOR.package == "protoevents.v1"
