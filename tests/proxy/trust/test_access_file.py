"""A bad access file is refused with a message naming the file, the line of the identity's
table, the identity and what is wrong; a good one reads as its identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from protoevents.proxy.access.policy import AccessFileError, load, parse
from protoevents.recorder.token import digest

DIGEST = digest("a-token")
GOOD = f'''# who may call the proxy
[[identities]]
name = "lab-a"
roles = ["record"]
sources = ["lab-a/instrument-*"]
tokens = ["{DIGEST}"]

[[identities]]
name = "ops"
roles = ["query", "watch", "admin"]
certificates = ["ops-*.example.org", "spiffe://example.org/ops"]
'''
SECOND = (
    '''[[identities]]
name = "ok"
tokens = ["'''
    + DIGEST
    + """"]

[[identities]]
"""
)
CASES = [
    ("x =\n", "access file f.toml is not valid TOML: Invalid value (at line 1, column 4)"),
    ("[[writers]]\nkind = 'sql'\n", "access file f.toml: unknown key 'writers'; expected "
     "[[identities]] tables"),
    ("identities = 3\n", "access file f.toml: identities must be [[identities]] tables"),
    (SECOND + 'name = "b"\nroles = ["wrte"]\ntokens = ["' + DIGEST + '"]\n',
     "f.toml:5: identity 'b': roles: unknown role 'wrte'; expected some of record, query, "
     "watch, forward, admin"),
    (SECOND + 'name = "b"\nroles = ["record"]\nsites = ["b"]\ntokens = ["' + DIGEST + '"]\n',
     "f.toml:5: identity 'b': sites: only an identity with role 'forward' forwards for sites"),
    (SECOND + 'roles = ["record"]\ntokens = ["' + DIGEST + '"]\n',
     "f.toml:5: identity #2: name: expected a non-empty string"),
    (SECOND + 'name = "b"\nsources = ["lab-b"]\ntokens = ["' + DIGEST + '"]\n',
     "f.toml:5: identity 'b': sources: 'lab-b' is not NODE/COMPONENT (globs allowed, such as "
     "'lab-*/instrument-*')"),
    (SECOND + 'name = "b"\ntokens = ["s3cret-token"]\n',
     "f.toml:5: identity 'b': tokens: entry 1 is not a sha256 hex digest (64 characters "
     "0-9a-f, as `protoevents token` prints): the file holds digests, never tokens"),
    (SECOND + 'name = "b"\ntokens = "s3cret-token"\n',
     "f.toml:5: identity 'b': tokens: expected a list of strings, got a string"),
    (SECOND + 'name = "b"\nroles = ["record"]\n',
     "f.toml:5: identity 'b': nothing proves it: give certificates (SAN names) or tokens "
     "(sha256 hex)"),
    (SECOND + 'name = "b"\nrole = ["record"]\ntokens = ["' + DIGEST + '"]\n',
     "f.toml:5: identity 'b': unknown key 'role'; expected name, roles, sources, "
     "sites, certificates, tokens"),
    (SECOND + 'name = "ok"\ntokens = ["' + DIGEST + '"]\n',
     "access file f.toml: identity 'ok' is named twice"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), CASES)
def test_a_bad_file_is_refused_saying_where_and_what(text: str, message: str) -> None:
    with pytest.raises(AccessFileError) as caught:
        parse(text, "f.toml")
    assert str(caught.value) == message
    assert "s3cret" not in str(caught.value)  # a token pasted by mistake is never echoed


def test_a_good_file_reads_as_its_identities(tmp_path: Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    lab, ops = load(path).identities
    assert (lab.name, lab.roles, lab.tokens) == ("lab-a", {"record"}, {DIGEST})
    assert lab.sources.allows("lab-a", "instrument-3")
    assert not lab.sources.allows("lab-a", "controller")
    assert not lab.sources.allows("lab-b", "instrument-3")
    assert ops.roles == {"query", "watch", "admin"} and not ops.sources.patterns
    policy = load(path)
    assert policy.by_certificate(["ops-1.example.org"]) is not None
    assert policy.by_certificate(["spiffe://example.org/ops"]) is not None
    assert policy.by_certificate(["lab-a.example.org"]) is None
    assert policy.by_token_digest(DIGEST) is not None


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AccessFileError, match=r"cannot read access file .*nothing\.toml: "):
        load(tmp_path / "nothing.toml")
