"""Certificates made in the test (trustme): the proxy's server credentials, with or without
client authentication, and clients' channel credentials for certificates of given names (DNS
names, or a URI, which trustme does not issue)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import grpc
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

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

    def uri_client_credentials(self, uri: str) -> grpc.ChannelCredentials:
        """A client trusting the proxy's certificate, presenting one whose only SAN is the
        URI `uri` (a SPIFFE ID, say), signed by this CA with `cryptography`."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey | RSAPrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        return grpc.ssl_channel_credentials(self.ca.cert_pem.bytes(), key_pem, cert_pem)
