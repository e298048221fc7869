"""The names of the Redis writer's keys, for the writer and for anything that reads them.

    {prefix}:stream:{n}:{node}:{component}   the source's stream of event ids
    {prefix}:events:{n}:{node}:{component}   the source's hash of events by id
    {prefix}:sources                         the set of the sources' streams

`n` is the length of `node` in UTF-8 bytes, in decimal (Redis keys are bytes, and so is
what `printf %s NODE | wc -c` counts). The source of an event forwarded from a site is
(site, node, component): `@{m}:{site}:` comes before its `{n}`, `m` the site's length (a
local source's part starts with a digit, a site's with `@`: they never meet). The kind
comes first, before any text a source chose, so no stream is named like a hash or the set;
the lengths say where the site and the node end, so no two sources share a key, whatever
colons or digits they hold.
Each Redis writer needs a `prefix` of its own, and no prefix may start with another's
followed by `:` (`protoevents` and `protoevents:stream:1:a` would share keys).
"""

from __future__ import annotations

STREAM = "stream"
EVENTS = "events"
SOURCES = "sources"


def _source(node: str, component: str, site: str) -> str:
    local = f"{len(node.encode())}:{node}:{component}"
    return f"@{len(site.encode())}:{site}:{local}" if site else local


def stream_key(prefix: str, node: str, component: str, site: str = "") -> str:
    """The stream of the source's event ids, in the order they were first stored."""
    return f"{prefix}:{STREAM}:{_source(node, component, site)}"


def events_key(prefix: str, node: str, component: str, site: str = "") -> str:
    """The hash of the source's events (serialized `protoevents.v1.Event`) by event id."""
    return f"{prefix}:{EVENTS}:{_source(node, component, site)}"


def sources_key(prefix: str) -> str:
    """The set of every source's stream key."""
    return f"{prefix}:{SOURCES}"
