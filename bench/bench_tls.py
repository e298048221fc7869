"""What mTLS costs ingest: events/s acknowledged over one loopback Record stream into a proxy
with client certificates required, beside the same proxy in plaintext, runs interleaved.

The certificates are made for the run (a CA, the proxy's and a client's, EC P-256 as trustme
issues them); the proxy runs in a child process with a counting no-op writer, fsync=batch.

    python -m bench.bench_tls [--events 200000] [--batch 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trustme

from bench.bench_ingest import one_run
from protoevents.recorder.tls import ClientTLS

TRANSPORTS = ("plaintext", "mtls")


def make_certificates(folder: Path) -> tuple[dict[str, Any], ClientTLS]:
    """The proxy's mTLS settings and a client's TLS, from a CA made in `folder`."""
    ca = trustme.CA()
    files = {name: folder / name for name in ("ca.pem", "proxy.pem", "proxy.key", "c.pem", "c.key")}
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    for leaf, (cert, key) in (
        (ca.issue_cert("localhost", "127.0.0.1"), ("proxy.pem", "proxy.key")),
        (ca.issue_cert("bench-client"), ("c.pem", "c.key")),
    ):
        files[cert].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(files[key]))
    server = {
        "tls_cert_file": files["proxy.pem"],
        "tls_key_file": files["proxy.key"],
        "tls_client_ca_file": files["ca.pem"],
    }
    return server, ClientTLS(files["ca.pem"], files["c.pem"], files["c.key"])


def rates(
    events: int, batch: int, runs: int, status: Callable[[str], None] = lambda _: None
) -> dict[str, list[float]]:
    """Events/s of each run, by transport; plaintext and mTLS runs alternate."""
    found: dict[str, list[float]] = {name: [] for name in TRANSPORTS}
    with tempfile.TemporaryDirectory() as pki:
        tls = make_certificates(Path(pki))
        for run in range(runs):
            for name in TRANSPORTS:
                status(f"run {run + 1}/{runs}: {name}")
                with tempfile.TemporaryDirectory() as folder:
                    rate, _ = one_run(
                        "batch", events, batch, Path(folder), tls if name == "mtls" else None
                    )
                found[name].append(rate)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--runs", type=int, default=5, help="runs per transport (median shown)")
    args = parser.parse_args()
    found = rates(args.events, args.batch, args.runs)
    plain = statistics.median(found["plaintext"])
    for name, samples in found.items():
        median = statistics.median(samples)
        print(f"{name:<10} {median:>12,.0f} events/s  {median / plain:.2f}x plaintext")


if __name__ == "__main__":
    main()
