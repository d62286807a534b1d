"""/readyz sees a model that hangs: "no verdict for N s" per camera, long before requests
time out. The daemon runs in-process against the simulator (held at 60 s per answer) and a
real Mosquitto broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from monitor.config import config_from_mapping
from monitor.service.supervisor import VERDICT_OVERDUE_MIN_S, Supervisor
from monitor.sim.broker import MosquittoBroker
from tests.support.processes import SimProcess


@pytest.mark.asyncio
async def test_readiness_reports_no_verdict_while_the_model_hangs(
    tmp_path: Path, mosquitto: MosquittoBroker, sim_process: SimProcess,
    scene_clips: dict[str, Path],
) -> None:
    await asyncio.to_thread(sim_process.set_behaviour, {"latency_s": 60.0})
    config = config_from_mapping({
        "state_dir": str(tmp_path / "state"),
        # The request timeout is far away: nothing else would say anything for 45 s.
        "vlm": {"base_url": sim_process.base_url, "timeout_s": 45, "max_retries": 0},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "client_id": "readiness"},
        "telemetry": {"enabled": False},
        "cameras": [{"id": "yard", "url": str(scene_clips["quiet"]), "loop": True,
                     "interval_s": 0.5}],
    }, source="test")
    supervisor = Supervisor.open(config)
    shutdown = asyncio.Event()
    running = asyncio.create_task(supervisor.run(shutdown))
    started = time.monotonic()
    try:
        reasons: tuple[str, ...] = ()
        while time.monotonic() - started < VERDICT_OVERDUE_MIN_S + 15:
            reasons = supervisor.readiness().reasons
            if any("no verdict for" in reason for reason in reasons):
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"no 'no verdict' reason within {VERDICT_OVERDUE_MIN_S + 15:g} s: "
                        f"{reasons}")
        reason = next(r for r in reasons if "no verdict for" in r)
        assert reason.startswith("camera yard: no verdict for ")
        seconds = float(reason.removeprefix("camera yard: no verdict for ").removesuffix(" s"))
        assert seconds >= VERDICT_OVERDUE_MIN_S
        # The analysis itself has not failed yet (its request is still waiting).
        assert not any("analysis failing" in r for r in reasons)
    finally:
        shutdown.set()
        await asyncio.wait_for(running, 15)
