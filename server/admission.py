"""Who may open an ingest call: a cap on all of them and one per client (pure, no I/O).

Ingest calls (Record streams and RecordBatch) are counted apart from every other RPC, so no
number of recorders can take the slots of health checks, queries or watchers. A client is the
host of the peer address (every process of one machine is one client); port and transport
prefix are left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


class AdmissionRefusedError(Exception):
    """An ingest call over a limit; the message names the limit and the setting."""


def client_of(peer: str) -> str:
    """The client of a gRPC peer string: `ipv4:10.0.0.7:5123` -> `10.0.0.7`,
    `ipv6:[::1]:5123` -> `::1`, `unix:/run/p.sock` -> `unix:/run/p.sock`."""
    transport, _, address = peer.partition(":")
    if transport == "ipv4":
        return address.rpartition(":")[0] or address
    if transport == "ipv6":
        host = address.rpartition(":")[0] if address.startswith("[") else address
        return host.strip("[]")
    return peer


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted call; give it back with `Admission.release`."""

    client: str


class Admission:
    """Counts open ingest calls, in total and per client, refusing those over a limit."""

    def __init__(self, max_calls: int, max_per_client: int) -> None:
        if max_calls < 1 or max_per_client < 1:
            raise ValueError("ingest call limits must be >= 1")
        self.max_calls = max_calls
        self.max_per_client = max_per_client
        self._open: Counter[str] = Counter()
        self._total = 0
        self.refused = 0

    @property
    def open(self) -> int:
        return self._total

    def admit(self, peer: str) -> Ticket:
        """A ticket for a call from `peer`; AdmissionRefusedError when a limit is reached."""
        client = client_of(peer)
        if self._total >= self.max_calls:
            self.refused += 1
            raise AdmissionRefusedError(
                f"the proxy has {self._total} ingest streams open, its limit "
                "(max_ingest_streams); retry later"
            )
        if self._open[client] >= self.max_per_client:
            self.refused += 1
            raise AdmissionRefusedError(
                f"client {client} has {self._open[client]} ingest streams open, the limit per "
                "client (max_streams_per_client); close idle streams or retry later"
            )
        self._open[client] += 1
        self._total += 1
        return Ticket(client)

    def release(self, ticket: Ticket) -> None:
        self._total -= 1
        self._open[ticket.client] -= 1
        if self._open[ticket.client] <= 0:
            del self._open[ticket.client]
