"""The TLS context of the proxy's own clients: syslog collectors, webhooks, SMTP servers."""

from __future__ import annotations

import ssl
from pathlib import Path

from protoevents.proxy.writers.base import WriterConfigError


def client_context(
    ca_file: Path | None,
    verify: bool,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    error: type[WriterConfigError] = WriterConfigError,
) -> ssl.SSLContext:
    """The system CAs or `ca_file`, hostname checks unless `verify` is false, a client
    certificate when given both files. A file that cannot be used raises `error` naming its
    option (`tls_ca_file`, `tls_cert_file`)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise error("tls_ca_file", ca_file, str(exc)) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise error("tls_cert_file", cert_file, str(exc)) from None
    return context
