"""How long each bounded text field of a stored event may be, in characters.

The database's columns are sized by it (`protoevents.proxy.db.models`), ingest rejects longer fields
(`protoevents.proxy.validation`) and query filters refuse longer values (`protoevents.proxy.query`).
Small enough that a PostgreSQL B-tree entry of any index stays under its ~2.7 kB limit.
"""

from __future__ import annotations

FIELD_LIMITS = {
    "id": 64,
    "type": 255,
    "category": 64,
    "source_node": 253,
    "source_component": 128,
    "object_kind": 128,
    "object_namespace": 128,
    "object_name": 253,
    "site": 64,  # a site name: 1 to 64 letters, digits, "_", "." or "-"
}
