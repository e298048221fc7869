"""Certificates made in the test (trustme): the proxy's server credentials, with or without
client authentication, and clients' channel credentials for certificates of given names."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import trustme

# The name the proxy's certificate is issued for: the address tests dial.
SERVER_NAME = "127.0.0.1"


@dataclass
class Pki:
    """A certificate authority of the test's own, and the proxy's certificate from it."""

    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.server = self.ca.issue_cert(SERVER_NAME)

    def server_credentials(self, *, client_auth: bool) -> grpc.ServerCredentials:
        """TLS for the proxy; with `client_auth`, mutual TLS (a client certificate of this
        CA required)."""
        return grpc.ssl_server_credentials(
            [(self.server.private_key_pem.bytes(), self.server.cert_chain_pems[0].bytes())],
            root_certificates=self.ca.cert_pem.bytes() if client_auth else None,
            require_client_auth=client_auth,
        )

    def client_credentials(self, *names: str) -> grpc.ChannelCredentials:
        """A client trusting the proxy's certificate, presenting one issued for `names`
        (DNS names in its SANs), or none when no names are given."""
        root = self.ca.cert_pem.bytes()
        if not names:
            return grpc.ssl_channel_credentials(root)
        cert = self.ca.issue_cert(*names)
        return grpc.ssl_channel_credentials(
            root, cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes()
        )
