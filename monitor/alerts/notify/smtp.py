"""E-mail notifications: the message (pure) and its sending over SMTP (blocking, in a thread).

The standard library's :mod:`smtplib` is used on a worker thread rather than an async SMTP
client: it speaks STARTTLS and implicit TLS, is maintained with Python itself, and a channel
sends at most a few messages a minute, so one short-lived thread per message costs nothing and
adds no dependency. Its timeout bounds every socket operation.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from monitor.alerts.notify.channels import Outcome, OutcomeKind
from monitor.alerts.notify.messages import Notification


def build_email(channel: Any, notification: Notification, image: bytes | None) -> EmailMessage:
    """The mail: subject = title, text body, the evidence JPEG attached."""
    message = EmailMessage()
    message["Subject"] = notification.title
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # The sender's domain: make_msgid would otherwise ask the resolver for this host's name.
    message["Message-ID"] = make_msgid(idstring=notification.key.replace(":", "."),
                                       domain=channel.sender.rpartition("@")[2] or "monitor")
    message["X-Monitor-Key"] = notification.key
    text = notification.text
    if notification.image_url:
        text += f"\n\n{notification.image_url}"
    message.set_content(text)
    if image is not None:
        message.add_attachment(image, maintype="image", subtype="jpeg",
                               filename="evidence.jpg")
    return message


def tls_context(channel: Any) -> ssl.SSLContext:
    """Certificate checks on, against ``ca_file`` or the system's CAs."""
    return ssl.create_default_context(cafile=channel.ca_file)


def send_email(channel: Any, message: EmailMessage, timeout_s: float) -> Outcome:
    """Send ``message`` (blocking: run it in a thread) and say what the server answered."""
    host, port = channel.host, channel.effective_port
    try:
        client: smtplib.SMTP
        if channel.security == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout_s,
                                      context=tls_context(channel))
        else:
            client = smtplib.SMTP(host, port, timeout=timeout_s)
        with client:
            if channel.security == "starttls":
                client.starttls(context=tls_context(channel))
            if channel.username is not None and channel.password is not None:
                client.login(channel.username, channel.password.get_secret_value())
            refused = client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome("refused", f"SMTP {exc.smtp_code} on login",
                       fix="the server refused username/password")
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome("refused", f"every recipient refused ({len(exc.recipients)})",
                       fix="check recipients")
    except smtplib.SMTPSenderRefused as exc:
        return Outcome("refused", f"SMTP {exc.smtp_code}: sender refused",
                       fix="check sender (the server may only accept its own domain)")
    except smtplib.SMTPNotSupportedError:
        return Outcome("refused", "the server does not offer STARTTLS or AUTH",
                       fix='set security = "tls" (port 465) or another server')
    except ssl.SSLCertVerificationError as exc:
        return Outcome("refused", f"certificate not trusted: {exc.verify_message}",
                       fix="set ca_file to the CA that signed the server's certificate")
    except smtplib.SMTPResponseException as exc:
        kind: OutcomeKind = "retry" if 400 <= exc.smtp_code < 500 else "dropped"
        return Outcome(kind, f"SMTP {exc.smtp_code} {exc.smtp_error!r}")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome("retry", f"{type(exc).__name__}: {exc}")
    if refused:
        return Outcome("ok", f"SMTP 250; refused for {len(refused)} recipient(s)")
    return Outcome("ok", "SMTP 250")
