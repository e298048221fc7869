"""The transport settings: TLS files come as a whole, plaintext stays on loopback unless
insecure, switches read from files, the environment and flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from protoevents.proxy import config
from protoevents.proxy.config import SettingsError, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("localhost", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("10.0.0.7", False),
        ("proxy.lan", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


TOGETHER = "tls_cert_file and tls_key_file go together"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tls_cert_file": "c.pem"}, f"setting tls_key_file = None: {TOGETHER}"),
        ({"tls_key_file": "k.pem"}, f"setting tls_cert_file = None: {TOGETHER}"),
        ({"tls_client_ca_file": "ca.pem"}, "setting tls_client_ca_file = 'ca.pem': needs tls_"),
        ({"tls_expiry_warning_days": "-1"}, "setting tls_expiry_warning_days = -1.0: must not"),
        ({"listen_unix": "/" + "s" * 107}, "setting listen_unix = '/sss"),
        ({"insecure": "maybe"}, "setting insecure = 'maybe' (from --insecure): expected true"),
    ],
)
def test_transport_settings_that_make_no_sense_are_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        config.from_sources(None, {}, changes)
    assert str(refused.value).startswith(message), refused.value


@pytest.mark.parametrize(
    ("environ", "insecure"),
    [({}, False), ({"PROTOEVENTS_INSECURE": "yes"}, True), ({"PROTOEVENTS_INSECURE": "0"}, False)],
)
def test_insecure_from_the_environment(environ: dict[str, str], insecure: bool) -> None:
    settings = config.from_sources(None, environ, {"listen": "0.0.0.0:1"} if insecure else {})
    assert settings.insecure is insecure


def test_tls_turns_the_network_on_and_the_flags_set_it(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(
        ["--listen", "0.0.0.0:50051", "--tls-cert-file", "p.pem", "--tls-key-file", "p.key"]
    )
    settings = config.from_arguments(args, environ={})
    assert settings.tls_on and not settings.insecure
    assert settings.tls_cert_file == Path("p.pem")
    assert config.from_arguments(parser.parse_args(["--insecure"]), environ={}).insecure
    assert config.from_arguments(parser.parse_args([]), environ={}).insecure is False
