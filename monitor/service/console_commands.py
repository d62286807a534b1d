"""The console's actions as MQTT commands (``console.mqtt_commands = true``).

A small subscriber of its own (client id ``<mqtt.client_id>-console``, no will: the
publisher's connection owns availability) takes JSON commands on::

    <prefix>/console/ack           {"id": "<alert id>", "by": "panel-1"}
    <prefix>/console/false_alarm   {"id": "<alert id>", "by": "panel-1"}
    <prefix>/console/missed        {"camera": "gate-1", "hazard": "smoke", "by": "panel-1"}

and carries them out like the console's buttons (their results show on ``<prefix>/events``
and in the log). Who may send them is the broker's ACL. It reconnects with
:mod:`monitor.backoff` and never holds up the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiomqtt
from pydantic import ValidationError

from monitor.backoff import backoff_s
from monitor.config import MqttConfig
from monitor.console.schemas import AlertCommand, MissedCommand
from monitor.console.web import ActionError, ConsoleActions
from monitor.model.answer import Hazard
from monitor.redaction import redact

logger = logging.getLogger(__name__)

COMMANDS = ("ack", "false_alarm", "missed")
RECONNECT_CAP_S = 30.0


def command_client(config: MqttConfig) -> aiomqtt.Client:
    """A client for the command subscription (same broker and credentials as the publisher)."""
    tls = None
    if config.uses_tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(config.ca_file) if config.ca_file else None,
            certfile=str(config.cert_file) if config.cert_file else None,
            keyfile=str(config.key_file) if config.key_file else None)
    return aiomqtt.Client(
        hostname=config.host, port=config.port, username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        identifier=f"{config.client_id}-console", keepalive=config.keepalive_s,
        protocol=(aiomqtt.ProtocolVersion.V5 if config.protocol == "5"
                  else aiomqtt.ProtocolVersion.V311),
        tls_params=tls, tls_insecure=config.tls_insecure if tls else None)


class ConsoleCommands:
    """Subscribes to the command topics and runs the actions (see the module docstring)."""

    def __init__(self, config: MqttConfig, actions: ConsoleActions) -> None:
        self._config = config
        self._actions = actions
        self.prefix = f"{config.topic_prefix}/console"
        self.subscribed = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until ``stopping`` is set."""
        serve = asyncio.ensure_future(self._serve())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({serve, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (serve, stop):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serve

    async def _serve(self) -> None:
        rng = random.Random()
        failures = 0
        while True:
            try:
                async with command_client(self._config) as client:
                    await client.subscribe(f"{self.prefix}/+", qos=1)
                    failures = 0
                    self.subscribed.set()
                    logger.info("console: taking commands on %s/{%s}", self.prefix,
                                ",".join(COMMANDS))
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            await self.handle(str(message.topic), bytes(payload))
            except aiomqtt.MqttError as exc:
                self.subscribed.clear()
                delay = backoff_s(failures, rng, base_s=1.0, cap_s=RECONNECT_CAP_S)
                failures += 1
                logger.warning("console: command subscription lost (%s); retrying in %.1f s",
                               redact(str(exc)), delay)
                await asyncio.sleep(delay)

    async def handle(self, topic: str, payload: bytes) -> str:
        """Carry out one command; returns what happened (also logged)."""
        command = topic.rsplit("/", 1)[-1]
        try:
            if command == "missed":
                missed = MissedCommand.model_validate_json(payload)
                saved = await self._actions.missed(missed.camera, Hazard(missed.hazard),
                                                   missed.by)
                outcome = f"saved {saved}"
            elif command in ("ack", "false_alarm"):
                alert = AlertCommand.model_validate_json(payload)
                act = self._actions.acknowledge if command == "ack" \
                    else self._actions.false_alarm
                await act(alert.id, alert.by)
                outcome = f"{command} done for alert {alert.id}"
            else:
                outcome = f"unknown command {command!r} (expected one of {', '.join(COMMANDS)})"
        except ValidationError as exc:
            outcome = f"invalid {command} command: {exc.errors()[0]['msg']}"
        except ActionError as exc:
            outcome = f"{command} refused: {exc}"
        logger.info("console: MQTT %s: %s", topic, redact(outcome))
        return outcome
