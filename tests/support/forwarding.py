"""Proxies forwarding to one another, for the forwarding tests: a site's config, repeats that
dedup merges (and the counts they make), and what each proxy holds, compared."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_event


def forward_config(path: Path, address: str, site: str, *, store: bool = True) -> Path:
    """Write a `--config` file at `path` whose proxy forwards to `address` for `site` (and
    stores into its own `db` too, with `store`)."""
    tables = ['[[writers]]\nname = "db"\nkind = "sql"\n'] if store else []
    tables.append(
        f'[[writers]]\nname = "upstream"\nkind = "forward"\naddress = "{address}"\n'
        f'site = "{site}"\n'
    )
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


class Repeats:
    """Events recorded with RecordBatch that dedup merges: each round records `keys` new
    contents twice in one batch (a new event of count 2), then once more in a second batch
    (an update to count 3), checked in the acknowledgements. `expected` is the count each
    stored event should have, as the acknowledgements said."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}

    def record(self, stub: proxy_service_pb2_grpc.EventProxyServiceStub, keys: int) -> None:
        round_ = uuid.uuid4().hex[:8]
        messages = [f"repeated {round_} {k}" for k in range(keys)]
        firsts = self._batch(stub, [m for m in messages for _ in range(2)])
        self._batch(stub, messages)
        assert [self.expected[i] for i in firsts] == [3] * keys, "repeats not merged"

    def _batch(
        self, stub: proxy_service_pb2_grpc.EventProxyServiceStub, messages: list[str]
    ) -> list[str]:
        """Record events of these messages; the ids of the new events among them."""
        events = [make_event(message=m) for m in messages]
        request = proxy_service_pb2.RecordBatchRequest(events=events)
        result = stub.RecordBatch(request, timeout=30).result
        assert (result.accepted_count, list(result.rejections)) == (len(events), []), result
        merged = {i for merge in result.merges for i in merge.indexes}
        new = [e.id for i, e in enumerate(events) if i not in merged]
        self.expected |= dict.fromkeys(new, 1)
        for merge in result.merges:
            self.expected[merge.into_event_id] += len(merge.indexes)
        return new


def differences(want: dict[str, int], got: dict[str, int]) -> str:
    """What `got` (ids and counts) lacks, has beyond, and counts otherwise than `want`, in
    short: a diff of many ids would take longer than the test."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    counts = {i: (want[i], got[i]) for i in sorted(set(want) & set(got)) if want[i] != got[i]}
    return (
        f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
        f"{len(counts)} counts (wanted, got) differ {dict(list(counts.items())[:5])}"
    )


def jsonl_sites(path: Path) -> dict[str, set[str]]:
    """The sites each event id carries in a proxy's JSON lines file ("" for none)."""
    sites: dict[str, set[str]] = defaultdict(set)
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)["event"]
        sites[event["id"]].add(event.get("site", ""))
    return dict(sites)
