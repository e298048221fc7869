"""The Redis writer's key names: no two sources share a key, and no key of one kind is named
like a key of another."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protoevents.proxy.writers.redis_keys import events_key, sources_key, stream_key
from tests.support.long_variants import scaled

# Names built of few pieces (colons, digits, a two-byte letter, the words of the layout)
# often spell the same key text in two ways; any text at all finds the rest.
_PIECES = st.sampled_from([":", "a", "1", "é", "events", "sources", "stream"])
_TEXT = st.lists(_PIECES, max_size=5).map("".join) | st.text(
    st.characters(codec="utf-8"), max_size=8
)
_SITES = st.sampled_from(["", "site-a", "1", "@1"]) | _TEXT
_SOURCES = st.tuples(_TEXT, _TEXT, _SITES)
Source = tuple[str, str, str]  # node, component, site


@st.composite
def _two_sources(draw: st.DrawFn) -> tuple[Source, Source]:
    """Two sources, often `node:component` (with the site, `site:node:component`) of the
    first cut at other colons, or cut after more text was added (the ways the first layout
    confused them)."""
    first = draw(_SOURCES)
    how = draw(st.sampled_from(["any", "recut", "grown"]))
    if how == "any":
        return first, draw(_SOURCES)
    text = f"{first[2]}:{first[0]}:{first[1]}" if first[2] else f"{first[0]}:{first[1]}"
    if how == "grown":
        text += ":" + draw(_TEXT)
    colons = [i for i, char in enumerate(text) if char == ":"]
    cuts = sorted(draw(st.lists(st.sampled_from(colons), min_size=1, max_size=2, unique=True)))
    if len(cuts) == 1:
        return first, (text[: cuts[0]], text[cuts[0] + 1 :], "")
    site, node = text[: cuts[0]], text[cuts[0] + 1 : cuts[1]]
    return first, (node, text[cuts[1] + 1 :], site)


_PREFIXES = st.sampled_from(["protoevents", "p", "a:b", "stream", "protoevents:stream:1:a"])


def keys_of(prefix: str, source: Source) -> list[str]:
    return [stream_key(prefix, *source), events_key(prefix, *source)]


def _counted(raw: bytes) -> tuple[str, bytes]:
    """A `{length}:{text}:` part read off `raw`: the text and what follows."""
    length, _, rest = raw.partition(b":")
    assert length == str(int(length)).encode(), raw  # decimal, no leading zeros
    end = int(length)
    assert rest[end : end + 1] == b":", raw
    return rest[:end].decode(), rest[end + 1 :]


def parse(prefix: str, key: str) -> tuple[str, str, str, str] | None:
    """(kind, node, component, site) read back from a key of `prefix`, or None for the
    set."""
    if key == f"{prefix}:sources":
        return None
    kind, sep, rest = key.removeprefix(f"{prefix}:").partition(":")
    assert sep and kind in {"stream", "events"}, key
    raw, site = rest.encode(), ""
    if raw.startswith(b"@"):
        site, raw = _counted(raw[1:])
    node, component = _counted(raw)
    return kind, node, component.decode(), site


# Pairs that shared keys when the keys were `{prefix}:recent:{node}:{component}` (stream),
# `...:events` (hash) and `{prefix}:recent:sources` (set).
@example(prefix="protoevents", sources=(("a:b", "c", ""), ("a", "b:c", "")))  # one stream
@example(prefix="protoevents", sources=(("n", "c", ""), ("n", "c:events", "")))  # stream is hash
@example(prefix="protoevents", sources=(("n", "c", ""), ("n:c", "events", "")))  # stream is hash
@example(prefix="protoevents", sources=(("n:c", "events", ""), ("n", "c:events", "")))  # one stream
@example(
    prefix="protoevents", sources=(("", "sources", ""), ("sources", "", ""))
)  # the set, a colon off
# The same node and component at two sites, and a site's source spelled as a local one.
@example(prefix="protoevents", sources=(("n", "c", "site-a"), ("n", "c", "site-b")))
@example(prefix="protoevents", sources=(("n", "c", "s"), ("s", "1:n:c", "")))
@settings(max_examples=scaled(1000, 10_000), deadline=None)
@given(prefix=_PREFIXES, sources=_two_sources())
def test_two_sources_never_share_a_key_and_no_key_is_named_like_another_kind(
    prefix: str, sources: tuple[Source, Source]
) -> None:
    first, second = sources
    keys = [*keys_of(prefix, first), sources_key(prefix)]
    if first != second:
        keys += keys_of(prefix, second)
    assert len({key.encode() for key in keys}) == len(keys)  # Redis compares bytes


@settings(max_examples=scaled(300, 3000), deadline=None)
@given(prefix=_PREFIXES, source=_SOURCES)
def test_a_key_names_its_kind_and_its_source(prefix: str, source: Source) -> None:
    stream, events = keys_of(prefix, source)
    assert parse(prefix, stream) == ("stream", *source)
    assert parse(prefix, events) == ("events", *source)
    assert parse(prefix, sources_key(prefix)) is None


def test_the_length_counts_utf8_bytes() -> None:
    assert (
        stream_key("protoevents", "node-7", "cluster-controller")
        == "protoevents:stream:6:node-7:cluster-controller"
    )
    assert events_key("protoevents", "nœud-7", "c") == "protoevents:events:7:nœud-7:c"
    assert sources_key("protoevents") == "protoevents:sources"
