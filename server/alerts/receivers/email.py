"""The email receiver (kind `email`): each notification as one plain-text message over SMTP
(STARTTLS or implicit TLS, authentication), its Message-ID derived from the notification
key."""

from __future__ import annotations

import email.utils
import hashlib
import ssl
import string
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import aiosmtplib

from protoevents.proxy.alerts.model import DeliveryError, Notification
from protoevents.proxy.alerts.receivers import fields
from protoevents.proxy.alerts.receivers.base import (
    ReceiverConfigError,
    ReceiverOptions,
    read_secret,
)
from protoevents.proxy.writers.client_tls import client_context
from protoevents.proxy.writers.syslog import split_address
from protoevents.recorder.registry import Registry
from protoevents.v1 import severity_pb2

# SMTP port of each TLS mode: submission with STARTTLS, submissions (RFC 8314), plain SMTP.
SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEFAULT_SUBJECT = "[{severity}] {rule}: {count} alert(s) {group}"
SUBJECT_FIELDS = ("rule", "receiver", "group", "count", "truncated", "severity")
# Characters a Message-ID's left part keeps as they are (RFC 5322 atext, '%' aside).
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$&'*+-/=?^_`{|}~")
_MAX_ID = 200  # longer keys are shortened, with a hash of the whole key


def message_id(key: str) -> str:
    """`<{key as safe text}@protoevents>`: the key's characters outside RFC 5322's atext
    percent-encoded (one key, one Message-ID, so a resend is recognisable); a key longer than
    200 such characters as its start, a dot and 32 hex digits of its SHA-256."""
    text = "".join(c if c in _ATEXT else "".join(f"%{b:02X}" for b in c.encode()) for c in key)
    if len(text) > _MAX_ID:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        text = f"{text[: _MAX_ID - 33].rstrip('%0123456789ABCDEF') or 'key'}.{digest}"
    return f"<{text}@protoevents>"


class _Labels(dict[str, str]):
    """Group labels for a subject template: a label the group lacks is empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _address(key: str, value: str) -> None:
    _, address = email.utils.parseaddr(value)
    if not address or "@" not in address or any(c in value for c in "\r\n"):
        raise ReceiverConfigError(key, value, "expected an address such as alerts@example.com")


@dataclass(frozen=True, slots=True)
class EmailOptions(ReceiverOptions):
    """Messages through one SMTP server (see EmailReceiver)."""

    address: str
    from_address: str
    to: tuple[str, ...]
    tls: str = "starttls"
    username: str | None = None
    password_file: Path | None = None
    timeout_s: float = 30.0
    subject: str = DEFAULT_SUBJECT
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_server_name: str | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        return split_address(self.address, SMTP_PORTS[self.tls])

    def validate(self) -> None:
        if self.tls not in SMTP_PORTS:
            raise ReceiverConfigError("tls", self.tls, "expected starttls, tls or none")
        try:
            self.host_port  # noqa: B018 - parses the address
        except ValueError as exc:
            raise ReceiverConfigError("address", self.address, str(exc)) from None
        _address("from_address", self.from_address)
        if not self.to:
            raise ReceiverConfigError("to", list(self.to), "expected at least one address")
        for value in self.to:
            _address("to", value)
        if (self.username is None) != (self.password_file is None):
            raise ReceiverConfigError(
                "password_file", self.password_file, "username and password_file go together"
            )
        if self.password_file is not None:
            if self.tls == "none":
                raise ReceiverConfigError(
                    "tls", self.tls, "authentication would send the password in clear text"
                )
            read_secret("password_file", self.password_file)
        if self.timeout_s <= 0:
            raise ReceiverConfigError("timeout_s", self.timeout_s, "must be greater than 0")
        try:
            self.subject.format_map(dict.fromkeys(SUBJECT_FIELDS, "") | {"labels": _Labels()})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            names = ", ".join(f"{{{name}}}" for name in SUBJECT_FIELDS)
            why = f"bad template ({exc!r}); it may use {names} and {{labels[NAME]}}"
            raise ReceiverConfigError("subject", self.subject, why) from None
        for key in ("tls_ca_file", "tls_server_name"):
            if getattr(self, key) is not None and self.tls == "none":
                raise ReceiverConfigError(key, getattr(self, key), "only used with tls or starttls")
        if self.tls != "none":
            self.ssl_context()

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context (writers/client_tls.py)."""
        return client_context(self.tls_ca_file, self.tls_verify, error=ReceiverConfigError)


Options = EmailOptions


def _severity(notification: Notification) -> str:
    highest = max((e.severity for e in notification.events), default=0)
    return severity_pb2.Severity.Name(highest).removeprefix("SEVERITY_")  # type: ignore[arg-type]


def group_text(notification: Notification) -> str:
    """The group labels as `name=value, ...` (sorted by name)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()))


def subject(template: str, notification: Notification) -> str:
    """The subject `template` filled in for `notification`, on one line."""
    text = template.format_map(
        {
            "rule": notification.rule,
            "receiver": notification.receiver,
            "group": group_text(notification),
            "count": len(notification.events) + notification.truncated,
            "truncated": notification.truncated,
            "severity": _severity(notification),
            "labels": _Labels(notification.group_labels),
        }
    )
    return " ".join(text.split())


def body(notification: Notification, registry: Registry | None = None) -> str:
    """The plain-text body: the rule, group and its annotations, then each event."""
    lines = [
        f"Rule: {notification.rule}",
        f"Group: {group_text(notification) or '(all)'}",
        f"Firing since: {notification.firing_since.isoformat()}",
    ]
    lines += [f"{k}: {v}" for k, v in sorted(notification.extra.items())]
    shown = len(notification.events)
    count = f"Events: {shown}"
    if notification.truncated:
        count += f" ({notification.truncated} more not shown)"
    lines += ["", count]
    for event in notification.events:
        labels = fields.alert_labels(event, notification.rule)
        lines += [
            "",
            f"[{labels['severity'].upper()}] {labels['alertname']}: {event.message}",
            f"  id: {event.id}",
            f"  count: {max(event.count, 1)}, first: "
            f"{fields.rfc3339(fields.first_time(event))}, last: "
            f"{fields.rfc3339(fields.last_time(event))}",
            f"  source: {event.source.node}/{event.source.component}",
        ]
        if text := fields.description(event, registry):
            lines.append(f"  description: {text}")
        if event.object.kind or event.object.name:
            ref = event.object
            path = "/".join(p for p in (ref.kind, ref.namespace, ref.name) if p)
            lines.append(f"  object: {path}")
        if event.site:
            lines.append(f"  site: {event.site}")
        if event.attributes:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
            lines.append(f"  attributes: {pairs}")
    return "\n".join(lines) + "\n"


class EmailReceiver:
    """Sends each notification as one plain-text email to `to`, from `from_address`,
    through the SMTP server at `address`: `tls` "starttls" (the default, port 587; the
    server must offer STARTTLS), "tls" (implicit TLS, port 465) or "none" (port 25, no
    authentication). With `username`, logs in with the password read from `password_file`
    at each delivery. `timeout_s` bounds each step (connect, each command).

    Message-ID is message_id(notification key), so a resend is recognisable as the same
    message. Retryable: no connection, a timeout, a disconnection, an SMTP 4xx answer.
    Permanent: an SMTP 5xx answer (a refused sender or recipient, a failed login), a server
    without STARTTLS or AUTH when the options need them. Some recipients refused and others
    not: raises, naming the refused ones (retryable when one refusal was 4xx; a resend
    reaches the others again, with the same Message-ID).
    """

    def __init__(
        self, options: EmailOptions, name: str = "email", registry: Registry | None = None
    ) -> None:
        self.name = name
        self.options = options
        self.registry = registry
        self._context = options.ssl_context() if options.tls != "none" else None

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage(policy=SMTP)
        message["From"] = self.options.from_address
        message["To"] = ", ".join(self.options.to)
        message["Subject"] = subject(self.options.subject, notification)
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = message_id(notification.key)
        message.set_content(body(notification, self.registry))
        return message

    async def deliver(self, notification: Notification) -> None:
        host, port = self.options.host_port
        where = f"email {self.name!r} ({host}:{port})"
        password = None
        if self.options.password_file is not None:
            try:
                password = read_secret("password_file", self.options.password_file)
            except ReceiverConfigError as exc:
                raise DeliveryError(f"{where}: {exc}", retryable=True) from None
        try:
            refused, _ = await aiosmtplib.send(
                self.message(notification),
                hostname=host,
                port=port,
                username=self.options.username,
                password=password,
                use_tls=self.options.tls == "tls",
                start_tls=self.options.tls == "starttls",
                tls_context=self._context,
                timeout=self.options.timeout_s,
                local_hostname=None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused(where, exc.recipients) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{where} answered {exc.code} {exc.message}", retryable=400 <= exc.code < 500
            ) from None
        except TimeoutError:
            raise DeliveryError(
                f"{where}: no answer within {self.options.timeout_s} s", retryable=True
            ) from None
        except (ConnectionError, OSError) as exc:  # aiosmtplib's connection errors too
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        except aiosmtplib.SMTPException as exc:
            # The server lacks what the options need (STARTTLS, AUTH): no resend fixes that.
            raise DeliveryError(f"{where}: {exc}", retryable=False) from None
        if refused:
            raise _refused(
                where,
                [
                    aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, address)
                    for address, answer in refused.items()
                ],
            )

    async def close(self) -> None:
        """Nothing to release: each delivery has a connection of its own."""


def _refused(where: str, recipients: list[aiosmtplib.SMTPRecipientRefused]) -> DeliveryError:
    shown = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in recipients)
    retryable = any(400 <= r.code < 500 for r in recipients)
    return DeliveryError(f"{where} refused recipients: {shown}", retryable=retryable)


Receiver = EmailReceiver


def build(options: EmailOptions, name: str, registry: Registry | None) -> EmailReceiver:
    return EmailReceiver(options, name=name, registry=registry)
