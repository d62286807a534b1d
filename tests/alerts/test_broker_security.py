"""Brokers that check who connects: TLS with client certificates and passwords (MQTT 5 and
3.1.1), and a wrong password (clear error, retried with backoff, nothing lost)."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor.alerts.publisher import MqttPublisher
from monitor.alerts.tracker import EventType
from monitor.backoff import ceiling_s
from monitor.config import MqttConfig
from monitor.sim.broker import BrokerTls, MosquittoBroker
from tests.alerts.test_publisher import event
from tests.support.mqtt_client import Subscriber, retained, running, wait_until, write_password_file

USER = "monitor"
PASSWORD = "Br0ker-s3cret"  # must never appear in a log line


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throw-away CA, a broker certificate for 127.0.0.1 and a client certificate."""
    files = {name: directory / name for name in (
        "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]),
            "-days", "1", "-subj", "/CN=monitor test CA")
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", f"/CN={USER}")):
        request = directory / f"{name}.csr"
        openssl("req", *ec, "-keyout", str(files[f"{name}.key"]), "-out", str(request),
                "-subj", subject)
        openssl("x509", "-req", "-in", str(request), "-CA", str(files["ca.crt"]),
                "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-days", "1",
                "-out", str(files[f"{name}.crt"]), "-extfile", str(extensions))
    return files


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_tls_with_client_certificate_and_password(tmp_path: Path, protocol: str) -> None:
    certs = make_certificates(tmp_path)
    passwords = tmp_path / "passwords"
    write_password_file(passwords, {USER: PASSWORD})
    tls = BrokerTls(certs["ca.crt"], certs["server.crt"], certs["server.key"],
                    require_client_certificate=True)
    client_tls = aiomqtt.TLSParameters(ca_certs=str(certs["ca.crt"]),
                                       certfile=str(certs["client.crt"]),
                                       keyfile=str(certs["client.key"]))
    options: dict[str, Any] = {"tls_params": client_tls, "username": USER, "password": PASSWORD}
    with MosquittoBroker(password_file=passwords, tls=tls) as broker:
        subscriber = Subscriber(broker, client_options=options)
        await subscriber.start()
        config = MqttConfig(host=broker.host, port=broker.port, client_id="monitor-tls",
                            protocol=protocol, ca_file=certs["ca.crt"],  # type: ignore[arg-type]
                            cert_file=certs["client.crt"], key_file=certs["client.key"],
                            username=USER, password=PASSWORD)  # type: ignore[arg-type]
        publisher = MqttPublisher(config)
        try:
            async with running(publisher):
                publisher.publish_event(event(EventType.START))
                await wait_until(lambda: len(subscriber.events()) == 1, 10, "the event over TLS")
        finally:
            await subscriber.stop()
        state = await retained(broker, "monitor/#", **options)
    assert state["monitor/cam1/fire"] == b"ON"
    assert state["monitor/availability"] == b"offline"


@pytest.mark.asyncio
async def test_wrong_password_is_reported_retried_and_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    passwords = tmp_path / "passwords"
    viewer = {"username": "viewer", "password": "viewer-pw"}
    write_password_file(passwords, {USER: "the-broker-knows-another-one", "viewer": "viewer-pw"})
    with MosquittoBroker(password_file=passwords) as broker:
        config = MqttConfig(host=broker.host, port=broker.port, client_id="monitor-auth",
                            username=USER, password=PASSWORD)  # type: ignore[arg-type]
        publisher = MqttPublisher(config, rng=random.Random(1))
        subscriber = Subscriber(broker, client_options=viewer)
        await subscriber.start()
        with caplog.at_level(logging.INFO, logger="monitor"):
            async with running(publisher):
                for index in range(3):
                    publisher.publish_event(event(EventType.START, f"e{index}"))
                await wait_until(lambda: publisher.connect_attempts >= 3, 15,
                                 "three connection attempts")
                assert not publisher.connected
                assert publisher.pending == 4  # 3 events + the retained ON: all kept
                assert publisher.last_error is not None
                assert f"refused the credentials (user '{USER}')" in publisher.last_error
                # The administrator fixes the broker's password file; no daemon restart.
                write_password_file(passwords, {USER: PASSWORD, "viewer": "viewer-pw"})
                await asyncio.to_thread(broker.reload)
                await wait_until(lambda: len(subscriber.events()) == 3, 20,
                                 "the stored events after the fix")
        await subscriber.stop()
    assert [e["id"] for e in subscriber.events()] == ["e0", "e1", "e2"]
    retries = [r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert len(retries) >= 2
    assert all("check mqtt.username and mqtt.password" in line for line in retries)
    delays = [float(line.split("reconnecting in ")[1].split(" s")[0]) for line in retries]
    # Full jitter under 1, 1.5, 2.25 ... s (printed to 0.1 s).
    for attempt, delay in enumerate(delays):
        assert 0.0 <= delay <= ceiling_s(attempt, base_s=1.0, cap_s=30.0, factor=1.5) + 0.05
    assert PASSWORD not in caplog.text


@pytest.mark.asyncio
async def test_a_message_the_brokers_acl_refuses_is_reported_not_taken_as_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The broker's ACL lets this client write everything under monitor/ but the event stream.
    # With MQTT 5 the broker answers such a publish with PUBACK "Not authorized", which
    # aiomqtt alone reports as delivered.
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite monitor/#\ntopic deny monitor/events\n")
    with MosquittoBroker(extra_config=f"acl_file {acl}\n") as broker:
        config = MqttConfig(host=broker.host, port=broker.port, client_id="monitor-acl")
        publisher = MqttPublisher(config, rng=random.Random(1))
        with caplog.at_level(logging.INFO, logger="monitor"):
            async with running(publisher):
                for index in range(3):
                    publisher.publish_event(event(EventType.START, f"e{index}"))
                await wait_until(lambda: publisher.pending == 0, 15, "the outbox sent")
                assert publisher.connected
        found = await retained(broker, "monitor/#")
    # Each event stores two messages: the event (refused) and the retained state (taken).
    assert publisher.refused == 3
    assert publisher.dropped == 3
    assert publisher.last_refusal == "monitor/events: Not authorized"
    assert found["monitor/cam1/fire"] == b"ON"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # once per topic, not once per message
    assert "the broker refused monitor/events (Not authorized); dropped" in errors[0]
    assert "ACL" in errors[0]
