"""How long each bounded text field of a stored event may be, in characters.

The database's columns are sized by it (`server.db.models`), ingest rejects longer fields
(`server.validation`) and query filters refuse longer values (`server.query`). Small enough
that a PostgreSQL B-tree entry of any index stays under its ~2.7 kB limit.
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
}
