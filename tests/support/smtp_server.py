"""An SMTP server for the tests (aiosmtpd on a loopback port, on its own thread): plain,
STARTTLS (required) or implicit TLS, optionally requiring a login it checks, recording
each message it accepted; `refuse` queues an answer for the next MAIL, RCPT or DATA."""

from __future__ import annotations

import email
import email.policy
import queue
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    tls: bool


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def _queued(self, step: str) -> str | None:
        try:
            queued_step, answer = self.server.refusals.get_nowait()
        except queue.Empty:
            return None
        if queued_step == step:
            return answer
        self.server.refusals.put((queued_step, answer))
        return None

    async def handle_MAIL(  # noqa: N802 - aiosmtpd names its hooks so
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if answer := self._queued("MAIL"):
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd names its hooks so
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if answer := self._queued(f"RCPT {address}") or self._queued("RCPT"):
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd names its hooks so
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if answer := self._queued("DATA"):
            return answer
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        # session.ssl is set by STARTTLS only; implicit TLS shows on the transport.
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        assert envelope.mail_from is not None
        self.server.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message, login, tls)
        )
        return "250 Message accepted"


class SmtpServer:
    """`mode`: "none" (plain), "starttls" (STARTTLS offered and required before MAIL) or
    "tls" (implicit TLS). With `users` ({login: password}), a login is required and
    checked (over TLS only)."""

    def __init__(
        self,
        mode: str,
        context: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.received: list[Received] = []
        self.refusals: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.users = users
        self.failed_logins = 0
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs |= {"tls_context": context, "require_starttls": True}
        elif mode == "tls":
            kwargs["ssl_context"] = context
        if users is not None:
            kwargs |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                # aiosmtpd counts only STARTTLS as TLS: with implicit TLS it is TLS anyway.
                "auth_require_tls": mode == "starttls",
            }
        # The controller checks its server by connecting to its port: it cannot take port 0.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **kwargs
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.users is not None
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=data)
        self.failed_logins += 1
        return AuthResult(success=False, handled=False)

    def refuse(self, step: str, answer: str) -> None:
        """Answer the next `step` ("MAIL", "RCPT", "RCPT ADDRESS" or "DATA") with `answer`,
        such as "451 4.3.0 Try again later"."""
        self.refusals.put((step, answer))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
