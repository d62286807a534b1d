"""The daemon's lifecycle as systemd sees it: sd_notify over a real datagram socket, ordered
SIGTERM with work in flight, SIGHUP reload, and /metrics against what MQTT carried.

Cameras here are local scene files played in real time (`loop = true`) so these tests need
no RTSP server; the model is the simulator process and the broker a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import pytest_asyncio

from monitor.config import config_from_mapping
from monitor.service.supervisor import Supervisor
from monitor.sim.broker import MosquittoBroker, free_port
from tests.conftest import ROOT
from tests.support.processes import SimProcess, clean_env


def camera_toml(camera_id: str, clip: Path, interval_s: float = 0.5) -> str:
    return (f'[[cameras]]\nid = "{camera_id}"\nurl = "{clip}"\nloop = true\n'
            f"interval_s = {interval_s}\n")


def base_toml(broker: MosquittoBroker, sim: SimProcess, state_dir: Path,
              metrics_port: int = 0) -> str:
    # Each daemon gets its own state directory (outbox): never the shared /var/lib/monitor.
    return (f'state_dir = "{state_dir}"\n'
            f'[vlm]\nbase_url = "{sim.base_url}"\ntimeout_s = 10\nmax_retries = 0\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "lifecycle"\n'
            f"[defaults]\nconfirm_frames = 2\nclear_frames = 2\n"
            f"[telemetry]\nport = {metrics_port}\n")


class Collector:
    """Subscribes to monitor/# in a background thread-free asyncio task."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.messages: list[tuple[str, bytes, float]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port,
                                  identifier=f"collector-{id(self)}") as client:
            await client.subscribe("monitor/#", qos=1)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.messages.append((str(message.topic), message.payload, time.monotonic()))

    def count(self, topic: str, since: float = 0.0) -> int:
        return sum(1 for t, _, at in self.messages if t == topic and at >= since)


@pytest_asyncio.fixture
async def collector(mosquitto: MosquittoBroker) -> AsyncIterator[Collector]:
    """A subscriber to ``monitor/#``, subscribed before the test starts its daemon."""
    subscriber = Collector(mosquitto)
    viewer = asyncio.create_task(subscriber.run())
    await subscriber.ready.wait()
    try:
        yield subscriber
    finally:
        viewer.cancel()


async def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait up to 10 s, then make sure it is gone."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(process.wait, 10)
    stop(process)


@pytest.fixture
def daemon_log(tmp_path: Path) -> Path:
    return tmp_path / "daemon.log"


def start_daemon(config: Path, log: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(config)],
                                stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**clean_env(), **(env or {})})


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


async def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_sd_notify_ready_watchdog_stopping(
    tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
    scene_clips: dict[str, Path], daemon_log: Path,
) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.2)
    config = tmp_path / "monitor.toml"
    config.write_text(base_toml(mosquitto, sim_process, tmp_path / "state")
                      + camera_toml("cam", scene_clips["quiet"]))
    process = start_daemon(config, daemon_log, {"NOTIFY_SOCKET": str(notify_path),
                                                "WATCHDOG_USEC": "1000000"})
    received: list[tuple[float, str]] = []

    def drain(seconds: float, *, until: str | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = listener.recv(4096)
            except TimeoutError:
                continue
            received.append((time.monotonic(), data.decode()))
            if until is not None and until in received[-1][1]:
                return

    try:
        # Start-up time depends on the machine's load: wait for READY, then count pings over
        # a fixed window after it.
        await asyncio.to_thread(drain, 30.0, until="READY=1")
        ready = [(at, m) for at, m in received if "READY=1" in m]
        assert ready, f"no READY=1: {received}; log: {daemon_log.read_text()[-2000:]}"
        assert "STATUS=" in ready[0][1]
        await asyncio.to_thread(drain, 3.0)
        pings = [at for at, m in received if "WATCHDOG=1" in m and at >= ready[0][0]]
        # WatchdogSec=1 s → a ping every 0.5 s while healthy: about 6 in the 3 s window.
        assert len(pings) >= 4, received
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.to_thread(drain, 1.0)
        code = await asyncio.to_thread(process.wait, 10)
        assert time.monotonic() - started < 5.0
        assert code == 0, daemon_log.read_text()[-2000:]
        assert any("STOPPING=1" in m for _, m in received)
    finally:
        stop(process)
        listener.close()


def test_no_watchdog_ping_while_the_event_loop_is_blocked(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "blocked"},
        "telemetry": {"enabled": False},
    })
    loop = asyncio.new_event_loop()
    shutdown = asyncio.Event()
    daemon_thread = threading.Thread(
        target=lambda: loop.run_until_complete(Supervisor.open(config).run(shutdown)), daemon=True)
    daemon_thread.start()
    pings: list[float] = []

    def drain(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if b"WATCHDOG=1" in listener.recv(4096):
                    pings.append(time.monotonic())
            except TimeoutError:
                continue

    try:
        drain(1.5)
        assert len(pings) >= 3
        # Block the event loop for 2 s: a hung daemon must stop proving liveness.
        blocked_at = time.monotonic()
        loop.call_soon_threadsafe(time.sleep, 2.0)
        drain(2.5)
        during = [at for at in pings if blocked_at + 0.3 < at < blocked_at + 1.9]
        assert during == []
        assert any(at > blocked_at + 2.0 for at in pings)  # and pings resume after
    finally:
        loop.call_soon_threadsafe(shutdown.set)
        daemon_thread.join(15)
        listener.close()
        loop.close()


@pytest.mark.asyncio
async def test_sigterm_with_a_request_in_flight(
    tmp_path: Path, sim_process: SimProcess, scene_clips: dict[str, Path],
    daemon_log: Path, collector: Collector,
) -> None:
    mosquitto = collector.broker
    await asyncio.to_thread(sim_process.set_behaviour, {"latency_s": 3.0})
    config = tmp_path / "monitor.toml"
    config.write_text(base_toml(mosquitto, sim_process, tmp_path / "state")
                      + camera_toml("slow", scene_clips["fire"]))
    process = start_daemon(config, daemon_log)
    try:
        await wait_for(lambda: sim_process.stats()["in_flight"] >= 1, 20, "a request in flight")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(process.wait, 10)
        elapsed = time.monotonic() - started
    finally:
        stop(process)
    assert code == 0, daemon_log.read_text()[-2000:]
    assert elapsed < 5.0
    await wait_for(lambda: any(t == "monitor/availability" and p == b"offline"
                               for t, p, _ in collector.messages), 5, "offline")


@pytest.mark.asyncio
async def test_sighup_adds_and_removes_cameras_and_refuses_a_broken_config(
    tmp_path: Path, sim_process: SimProcess, scene_clips: dict[str, Path],
    daemon_log: Path, collector: Collector,
) -> None:
    mosquitto = collector.broker
    config = tmp_path / "monitor.toml"
    base = base_toml(mosquitto, sim_process, tmp_path / "state")
    config.write_text(base + camera_toml("keep", scene_clips["quiet"])
                      + camera_toml("drop", scene_clips["quiet"]))
    process = start_daemon(config, daemon_log)
    keep, drop, new = ("monitor/keep/verdict", "monitor/drop/verdict", "monitor/new/verdict")
    try:
        await wait_for(lambda: collector.count(keep) >= 4 and collector.count(drop) >= 2, 30,
                       "verdicts from both cameras")
        window = 3.0
        before_start = time.monotonic()
        await asyncio.sleep(window)
        rate_before = collector.count(keep, before_start) / window

        config.write_text(base + camera_toml("keep", scene_clips["quiet"])
                          + camera_toml("new", scene_clips["no_helmet"]))
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: collector.count(new) >= 2, 20, "the added camera's verdicts")
        await asyncio.sleep(1.5)  # the removed camera's last request may still land
        after_start = time.monotonic()
        await asyncio.sleep(window)
        assert collector.count(drop, after_start) == 0  # removed: no more verdicts
        rate_after = collector.count(keep, after_start) / window
        assert rate_after >= 0.6 * rate_before  # the untouched camera kept its pace
        assert process.poll() is None

        config.write_text(base + '[[cameras]]\nid = "bad id!"\nurl = "x"\n')
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "new configuration rejected" in daemon_log.read_text(), 10,
                       "the rejection")
        assert "cameras.0.id" in daemon_log.read_text()
        still = time.monotonic()
        await wait_for(lambda: collector.count(keep, still) >= 2, 10,
                       "verdicts after the rejected reload")
        assert process.poll() is None
    finally:
        await terminate(process)


@pytest.mark.asyncio
async def test_metrics_match_what_mqtt_carried(
    tmp_path: Path, sim_process: SimProcess, scene_clips: dict[str, Path],
    daemon_log: Path, collector: Collector,
) -> None:
    mosquitto = collector.broker
    port = free_port()
    config = tmp_path / "monitor.toml"
    config.write_text(base_toml(mosquitto, sim_process, tmp_path / "state", metrics_port=port)
                      + camera_toml("fire", scene_clips["fire"], interval_s=0.5))
    process = start_daemon(config, daemon_log)
    def scrape(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return str(r.read().decode())

    try:
        await wait_for(lambda: any(t == "monitor/events" for t, _, _ in collector.messages),
                       30, "a fire event")
        assert (await asyncio.to_thread(scrape, "/healthz")).strip() == "ok"
        readiness = json.loads(await asyncio.to_thread(scrape, "/readyz"))
        assert readiness["ready"] is True
        # Hold the model: new requests wait 60 s, so the counters stop moving.
        await asyncio.to_thread(sim_process.set_behaviour, {"latency_s": 60.0})
        await asyncio.sleep(1.5)
        verdicts = collector.count("monitor/fire/verdict")
        events = [json.loads(p) for t, p, _ in collector.messages if t == "monitor/events"]
        text = await asyncio.to_thread(scrape, "/metrics")
    finally:
        await terminate(process)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    ok = values['monitor_vlm_requests_total{endpoint="' + sim_process.base_url + '",outcome="ok"}']
    assert ok == verdicts
    assert events
    for hazard, kind in {(e["hazard"], e["type"]) for e in events}:
        published = sum(1 for e in events if (e["hazard"], e["type"]) == (hazard, kind))
        assert values[f'monitor_events_total{{hazard="{hazard}",type="{kind}"}}'] == published
    assert values['monitor_frames_read_total{camera="fire"}'] > 0
    assert values["monitor_broker_connected"] == 1.0
    assert values['monitor_camera_online{camera="fire"}'] == 1.0
    assert values['monitor_vlm_tokens_total{kind="prompt"}'] > 0
    assert "secret" not in text
    assert os.environ.get("MONITOR_MQTT__PASSWORD") is None


def test_unusable_state_dir_exits_78_without_a_restart_loop(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    config = tmp_path / "monitor.toml"
    config.write_text(f'state_dir = "{blocker}"\n[telemetry]\nenabled = false\n')
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "-c", str(config)],
                            capture_output=True, text=True, cwd=ROOT, env=clean_env(),
                            timeout=60, check=False)
    assert result.returncode == 78, result.stderr[-2000:]
    assert "cannot start" in result.stderr
    assert str(blocker) in result.stderr
    assert "Traceback" not in result.stderr
