"""Handing a finished message to a mail server: STARTTLS, implicit TLS (SMTPS) or neither, with an optional sign-in.

The one SMTP client: alert emails (``notify.send_email``) and report deliveries both go through
``send``. ``SmtpConfig`` is the environment's server (``from_settings``: the ``METERBOOK_SMTP_*``
settings) or a workspace's own (``engine.reports.smtp_settings.config_for``). Failures raise
``DeliveryFailed`` with a message fit to show and store: it names the server and the server's
own words, and is what a delivery's history shows.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from engine.config import Settings, get_settings
from engine.errors import MeterbookError

TIMEOUT_S = 15.0


class DeliveryFailed(MeterbookError):
    """A message could not be handed over; the text says to whom and why."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None
    password: str | None
    from_address: str
    source: str  # "workspace" or "environment", for messages

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return f"SmtpConfig({self.where}, {self.security}, user={self.username!r}, from={self.from_address!r})"


def from_settings(settings: Settings | None = None) -> SmtpConfig | None:
    """The environment's mail server, or None when ``METERBOOK_SMTP_HOST`` is not set."""
    s = settings or get_settings()
    if not s.smtp_host:
        return None
    return SmtpConfig(s.smtp_host, s.smtp_port, "starttls" if s.smtp_starttls else "none", s.smtp_username or None,
                      s.smtp_password.get_secret_value() if s.smtp_password else None, s.smtp_from, "environment")


def plain_message(config: SmtpConfig, to: list[str], subject: str, text: str) -> EmailMessage:
    """A plain-text message from ``config``'s sender to ``to``, with the Date and Message-ID servers expect."""
    msg = EmailMessage()
    msg["From"] = config.from_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=config.from_address.rpartition("@")[2] or "meterbook.local")
    msg.set_content(text)
    return msg


def send(config: SmtpConfig, msg: EmailMessage, recipients: list[str]) -> None:
    """Send ``msg`` to ``recipients`` (the envelope; the headers are the message's own)."""
    if not recipients:
        raise DeliveryFailed("The email has no recipients.")
    where = config.where
    try:
        if config.security == "tls":
            client = smtplib.SMTP_SSL(config.host, config.port, timeout=TIMEOUT_S,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=TIMEOUT_S)
        with client as smtp:
            if config.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if config.username:
                smtp.login(config.username, config.password or "")
            refused = smtp.send_message(msg, from_addr=config.from_address, to_addrs=recipients)
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed(f"The mail server {where} does not offer STARTTLS; choose implicit TLS, or no "
                             "encryption only if the server is on a trusted network.") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"The mail server {where} refused the user name or password ({exc.smtp_code}).") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryFailed(f"The mail server {where} refused every recipient: {', '.join(exc.recipients)}.") from None
    except smtplib.SMTPResponseException as exc:
        words = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise DeliveryFailed(f"The mail server {where} answered {exc.smtp_code}: {words}") from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"Could not start TLS with the mail server {where}: {exc.reason or exc}.") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"Could not send email through {where}: {exc}.") from None
    if refused:
        raise DeliveryFailed(f"The mail server {where} refused {', '.join(sorted(refused))}.")
