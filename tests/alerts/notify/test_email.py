"""E-mail channels against a real SMTP server (aiosmtpd): STARTTLS with a login and implicit
TLS, both with a self-signed certificate the channel trusts through ``ca_file``; the mail
arrives with its evidence image attached; a wrong password is a refusal with the fix."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from monitor.sim.broker import free_port
from tests.alerts.notify.support import CHANNEL, event_payload, sending, wait_for, worker_for

SMTP_USER = "alerts@example.test"
SMTP_PASSWORD = "smtp-password-8c1d2e"


@dataclass
class Mailbox:
    """What the SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session,  # noqa: N802 - aiosmtpd's name
                          envelope: Envelope) -> str:
        """Keep the mail."""
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


def authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
    """Accept only the test user's password."""
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            tls_context=server_context(certificate), require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            ssl_context=server_context(certificate))
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def email_channel(port: int, cert: Path, **fields: Any) -> Any:
    table = {"name": "mail", "type": "email", "host": "127.0.0.1", "port": port,
             "sender": SMTP_USER, "recipients": ["safety@example.test"],
             "ca_file": str(cert), "timeout_s": 5.0, "retry_cap_s": 1.0, **fields}
    return CHANNEL.validate_python(table)


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "evidence.jpg"
    path.write_bytes(simplejpeg.encode_jpeg(np.full((32, 32, 3), 90, np.uint8),
                                            colorspace="RGB"))
    return path


@pytest.mark.asyncio
async def test_starttls_with_login_delivers_the_mail_with_its_image(
        starttls_server: tuple[Mailbox, int], certificate: tuple[Path, Path], jpeg: Path,
        tmp_path: Path) -> None:
    mailbox, port = starttls_server
    channel = email_channel(port, certificate[0], username=SMTP_USER, password=SMTP_PASSWORD,
                            language="zh")
    worker = worker_for(channel, tmp_path)
    async with sending(worker):
        worker.offer(event_payload(snapshot=jpeg))
        await wait_for(lambda: len(mailbox.messages) == 1 and worker.outbox.depth == 0)
    mail = mailbox.messages[0]
    assert "cam1" in str(mail["Subject"])
    assert mail["X-Monitor-Key"] == "alert-1:0"
    body = mail.get_body(("plain",))
    assert body is not None
    assert "火焰" in body.get_content()
    (attachment,) = list(mail.iter_attachments())
    assert attachment.get_content_type() == "image/jpeg"
    assert attachment.get_content() == jpeg.read_bytes()
    assert worker.outbox.depth == 0


@pytest.mark.asyncio
async def test_implicit_tls_delivers(tls_server: tuple[Mailbox, int],
                                     certificate: tuple[Path, Path], tmp_path: Path) -> None:
    mailbox, port = tls_server
    worker = worker_for(email_channel(port, certificate[0], security="tls"), tmp_path)
    async with sending(worker):
        worker.offer(event_payload("end"))
        await wait_for(lambda: len(mailbox.messages) == 1)
    assert str(mailbox.messages[0]["Subject"]).startswith("Cleared: Fire on camera cam1")


@pytest.mark.asyncio
async def test_a_wrong_password_is_a_refusal_with_the_fix(
        starttls_server: tuple[Mailbox, int], certificate: tuple[Path, Path],
        tmp_path: Path) -> None:
    _mailbox, port = starttls_server
    channel = email_channel(port, certificate[0], username=SMTP_USER, password="wrong-pass")
    worker = worker_for(channel, tmp_path)
    outcome = await worker.deliver(worker_notification(worker))
    assert outcome.kind == "refused", outcome.detail
    assert outcome.fix is not None
    assert "password" in outcome.fix


@pytest.mark.asyncio
async def test_an_untrusted_certificate_is_a_refusal(
        tls_server: tuple[Mailbox, int], tmp_path: Path) -> None:
    _mailbox, port = tls_server
    worker = worker_for(CHANNEL.validate_python({
        "name": "mail", "type": "email", "host": "127.0.0.1", "port": port,
        "security": "tls", "sender": SMTP_USER, "recipients": ["a@example.test"],
        "timeout_s": 5.0}), tmp_path)
    outcome = await worker.deliver(worker_notification(worker))
    assert outcome.kind == "refused"
    assert "ca_file" in (outcome.fix or "")


def worker_notification(worker: Any) -> Any:
    from monitor.alerts.notify.messages import probe_notification  # noqa: PLC0415

    return probe_notification(worker.channel, "2026-12-02T01:00:00Z")
