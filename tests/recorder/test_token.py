"""Bearer tokens as `protoevents token` makes them: usable as a command-line value."""

from __future__ import annotations

from protoevents.recorder.token import digest, new_token


def test_a_new_token_never_looks_like_an_option() -> None:
    # About one token_urlsafe in 64 starts with '-', which `--token VALUE` refuses: in 4,096
    # tokens such a start would show some 64 times.
    tokens = [new_token() for _ in range(4096)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)
    assert {len(t) for t in tokens} == {43}  # 256 bits, URL-safe base64 without padding


def test_the_digest_is_sha256_hex() -> None:
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
