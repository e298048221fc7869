"""The email receiver against a real SMTP server (aiosmtpd): STARTTLS and implicit TLS with
certificates of the test's own CA, a login the server checks, the Message-ID, the subject
and body, and what is retryable."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from protoevents.proxy.alerts.model import DeliveryError, Notification
from protoevents.proxy.alerts.receivers.base import ReceiverConfigError
from protoevents.proxy.alerts.receivers.email import EmailOptions, EmailReceiver, message_id
from protoevents.proxy.alerts.receivers.kinds import parse_receiver
from protoevents.recorder.registry import Registry
from tests.support.notifications import alerting_event, notification
from tests.support.smtp_server import SmtpServer

USERS = {"alerts": "hunter2"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("hunter2\n")
    return path


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def starttls(ca: trustme.CA) -> Iterator[SmtpServer]:
    server = SmtpServer("starttls", server_context(ca), USERS).start()
    yield server
    server.stop()


@pytest.fixture
def implicit_tls(ca: trustme.CA) -> Iterator[SmtpServer]:
    server = SmtpServer("tls", server_context(ca), USERS).start()
    yield server
    server.stop()


@pytest.fixture
def plain() -> Iterator[SmtpServer]:
    server = SmtpServer("none").start()
    yield server
    server.stop()


def receiver(address: str, **options: Any) -> EmailReceiver:
    options.setdefault("from_address", "protoevents <alerts@lab.example>")
    options.setdefault("to", ("ops@lab.example", "oncall@lab.example"))
    return EmailReceiver(
        EmailOptions(address=address, **options), name="mail", registry=Registry.builtin()
    )


def deliver(receiver: EmailReceiver, sent: Notification | None = None) -> None:
    async def main() -> None:
        try:
            await receiver.deliver(sent or notification())
        finally:
            await receiver.close()

    asyncio.run(main())


def failure(receiver: EmailReceiver, sent: Notification | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        deliver(receiver, sent)
    return caught.value


def logged_in(server: SmtpServer, ca_file: Path, password_file: Path, tls: str) -> EmailReceiver:
    return receiver(
        server.address,
        tls=tls,
        tls_ca_file=ca_file,
        username="alerts",
        password_file=password_file,
    )


def test_starttls_with_a_login(starttls: SmtpServer, ca_file: Path, password_file: Path) -> None:
    first, second = alerting_event(0), alerting_event(1)
    second.site = "lab-a"
    sent = notification(first, second, truncated=2, extra={"runbook": "https://x/rb"})
    deliver(logged_in(starttls, ca_file, password_file, "starttls"), sent)

    (got,) = starttls.received
    assert got.tls
    assert got.login == "alerts"
    assert got.sender == "alerts@lab.example"
    assert got.recipients == ["ops@lab.example", "oncall@lab.example"]
    message = got.message
    assert message["Message-ID"] == "<nic-down/category=cluster/1@protoevents>"
    assert message["Subject"] == "[ERROR] nic-down: 4 alert(s) category=cluster"
    assert message["From"] == "protoevents <alerts@lab.example>"
    assert message["To"] == "ops@lab.example, oncall@lab.example"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    text = message.get_content().replace("\r\n", "\n")
    assert text.startswith(
        "Rule: nic-down\n"
        "Group: category=cluster\n"
        "Firing since: 2026-01-01T00:00:00+00:00\n"
        "runbook: https://x/rb\n"
        "\n"
        "Events: 2 (2 more not shown)\n"
    )
    assert (
        "[ERROR] CLUSTER_EVENT_TYPE_LEADER_ELECTED: node-1 was elected leader\n"
        f"  id: {second.id}\n"
        "  count: 2, first: 2026-01-01T00:00:00.001000Z, last: 2026-01-01T00:00:00.001000Z\n"
        "  source: node-1/cluster-controller\n"
        "  description: A node was elected leader of the cluster.\n"
        "  object: Node/node-1\n"
        "  site: lab-a\n"
        "  attributes: term=1\n"
    ) in text
    assert f"  id: {first.id}\n" in text


# aiosmtpd takes only STARTTLS for TLS, and warns when a login over implicit TLS is allowed.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_a_login(
    implicit_tls: SmtpServer, ca_file: Path, password_file: Path
) -> None:
    deliver(logged_in(implicit_tls, ca_file, password_file, "tls"))
    (got,) = implicit_tls.received
    assert got.tls
    assert got.login == "alerts"


def test_a_resend_has_the_same_message_id(plain: SmtpServer) -> None:
    sent = notification(key="nic-down/node=node 7/12")
    deliver(receiver(plain.address, tls="none"), sent)
    deliver(receiver(plain.address, tls="none"), sent)
    ids = [r.message["Message-ID"] for r in plain.received]
    assert ids == ["<nic-down/node=node%207/12@protoevents>"] * 2
    assert not plain.received[0].tls


def test_a_wrong_password_is_permanent(starttls: SmtpServer, ca_file: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("guess")
    error = failure(logged_in(starttls, ca_file, wrong, "starttls"))
    assert not error.retryable
    assert "answered 535" in str(error)
    assert starttls.failed_logins > 0
    assert starttls.received == []


def test_no_login_where_one_is_required_is_permanent(starttls: SmtpServer, ca_file: Path) -> None:
    error = failure(receiver(starttls.address, tls_ca_file=ca_file))
    assert not error.retryable
    assert "530" in str(error)


def test_an_untrusted_certificate_is_retryable(starttls: SmtpServer) -> None:
    error = failure(receiver(starttls.address))
    assert error.retryable
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)


def test_starttls_asked_of_a_server_without_it_is_permanent(plain: SmtpServer) -> None:
    error = failure(receiver(plain.address, tls="starttls"))
    assert not error.retryable
    assert "STARTTLS" in str(error)


@pytest.mark.parametrize(
    ("step", "answer", "retryable"),
    [
        ("MAIL", "451 4.3.0 Mail server temporarily rejected message", True),
        ("MAIL", "553 5.1.8 Sender address rejected", False),
        ("RCPT", "450 4.2.1 Mailbox busy", True),
        ("RCPT", "550 5.1.1 No such user", False),
        ("DATA", "452 4.3.1 Insufficient system storage", True),
        ("DATA", "554 5.6.0 Message rejected", False),
    ],
)
def test_smtp_4xx_is_retryable_and_5xx_permanent(
    plain: SmtpServer, step: str, answer: str, retryable: bool
) -> None:
    plain.refuse(step, answer)
    error = failure(receiver(plain.address, tls="none", to=("ops@lab.example",)))
    assert error.retryable is retryable
    assert answer.split(maxsplit=1)[0] in str(error)
    assert plain.received == []


def test_one_recipient_refused_of_two_is_reported(plain: SmtpServer) -> None:
    plain.refuse("RCPT oncall@lab.example", "550 5.1.1 No such user")
    error = failure(receiver(plain.address, tls="none"))
    assert not error.retryable
    assert "refused recipients: oncall@lab.example: 550" in str(error)
    (got,) = plain.received
    assert got.recipients == ["ops@lab.example"]


def test_no_server_is_retryable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    error = failure(receiver(f"127.0.0.1:{port}", tls="none"))
    assert error.retryable


def test_a_server_that_never_greets_times_out_retryable() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        error = failure(receiver(f"127.0.0.1:{port}", tls="none", timeout_s=0.3))
    assert error.retryable
    assert "0.3 s" in str(error)


def test_the_subject_template() -> None:
    options = EmailOptions(
        address="127.0.0.1",
        from_address="a@x",
        to=("b@x",),
        tls="none",
        subject="{rule} on {labels[category]} {labels[node]}\n({count}, {truncated} cut)",
    )
    message = EmailReceiver(options).message(notification(truncated=1))
    assert message["Subject"] == "nic-down on cluster (3, 1 cut)"


def test_message_ids_are_safe_text() -> None:
    assert message_id("r/g/1") == "<r/g/1@protoevents>"
    assert message_id("r/a.b <c>@d/2") == "<r/a%2Eb%20%3Cc%3E%40d/2@protoevents>"
    assert message_id("r/é/3") == "<r/%C3%A9/3@protoevents>"
    long_key = "rule/" + "x" * 500 + "/1"
    shortened = message_id(long_key)
    assert len(shortened) < 220
    assert shortened != message_id("rule/" + "x" * 500 + "/2")
    assert shortened == message_id(long_key)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"from_address": "a@x", "to": ["b@x"]}, "address = None: required"),
        ({"address": "h", "from_address": "nobody", "to": ["b@x"]}, "from_address = 'nobody'"),
        ({"address": "h", "from_address": "a@x", "to": []}, "to = []: expected at least one"),
        ({"address": "h", "from_address": "a@x", "to": "b@x"}, "to = 'b@x': expected a list"),
        ({"address": "h:0", "from_address": "a@x", "to": ["b@x"]}, "address = 'h:0'"),
        (
            {"address": "h", "from_address": "a@x", "to": ["b@x"], "tls": "ssl"},
            "tls = 'ssl': expected starttls, tls or none",
        ),
        (
            {"address": "h", "from_address": "a@x", "to": ["b@x"], "username": "u"},
            "password_file = None: username and password_file go together",
        ),
        (
            {"address": "h", "from_address": "a@x", "to": ["b@x"], "subject": "{nope}"},
            "subject = '{nope}': bad template (KeyError('nope'))",
        ),
    ],
)
def test_bad_options_are_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ReceiverConfigError) as caught:
        parse_receiver("email", table)
    assert str(caught.value).startswith(message)


def test_a_password_is_never_sent_in_clear(password_file: Path) -> None:
    table = {"address": "h", "from_address": "a@x", "to": ["b@x"], "username": "u"}
    with pytest.raises(ReceiverConfigError, match="tls = 'none': authentication would send"):
        parse_receiver("email", table | {"password_file": str(password_file), "tls": "none"})
    options = parse_receiver("email", table | {"password_file": str(password_file)})
    assert options.host_port == ("h", 587)
    assert parse_receiver("email", table | {"password_file": str(password_file), "tls": "tls"})
