"""What the operator console costs: 48 cameras, console off vs console on with one viewer.

Two daemons (``monitor run`` subprocesses) watch the same 48 synthetic cameras (the soak's
looping files, :func:`bench.soak.scene_clips`) side by side, in the same run, against one VLM
simulator and one Mosquitto: ``off`` with ``console.enabled = false``, ``on`` with the console
(loopback, no login). Both are measured over the same windows, so the machine's other load
falls on both alike:

1. no viewer: what having the console costs by itself (its memory of samples; goal ~0);
2. one viewer on ``on``: a Server-Sent Events client on ``/api/stream`` that fetches the JPEG
   of every new sample, as the cameras grid does (goal: at most 3 % of one core more).

CPU is user + system time of each daemon's process from ``/proc/<pid>/stat`` divided by the
window's wall time, in percent of one core.

Usage (from the repository root)::

    .venv/bin/python -m bench.console                 # 48 cameras, 60 s windows
    .venv/bin/python -m bench.console --window-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.soak import (
    DEFAULT_CACHE,
    SCENES,
    proc_cpu_s,
    scene_clips,
    start_daemon,
    start_sim,
    stop,
)
from monitor.sim.broker import MosquittoBroker, free_port, wait_for_port


def write_config(path: Path, *, name: str, console: bool, cameras: int,
                 clips: dict[str, Path], vlm_port: int, broker: MosquittoBroker,
                 port: int) -> None:
    """One daemon's configuration: its own state, client id, prefix and HTTP port."""
    lines = [
        f'state_dir = "{path.parent / ("state-" + name)}"',
        "[vlm]", f'base_url = "http://127.0.0.1:{vlm_port}/v1"', "timeout_s = 10",
        "[mqtt]", f'host = "{broker.host}"', f"port = {broker.port}",
        f'client_id = "monitor-bench-{name}"', f'topic_prefix = "bench-{name}"',
        "[telemetry]", f"port = {port}",
        "[console]", f"enabled = {'true' if console else 'false'}",
    ]
    for index in range(cameras):
        scene = SCENES[index % len(SCENES)]
        lines += ["[[cameras]]", f'id = "cam{index:02d}-{scene.replace("_", "-")}"',
                  f'url = "{clips[scene]}"', "loop = true"]
    path.write_text("\n".join(lines) + "\n")


class Viewer:
    """One browser's worth of traffic: the live stream plus each new sample's JPEG."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.images = 0
        self.image_bytes = 0
        self.updates = 0

    async def run(self) -> None:
        """Follow ``/api/stream`` until cancelled."""
        async with aiohttp.ClientSession() as http, \
                http.get(self.base_url + "/api/stream",
                         timeout=aiohttp.ClientTimeout(total=None)) as stream:
            event = ""
            async for raw in stream.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "sample":
                    self.updates += 1
                    sample = json.loads(line[6:])["sample"]
                    async with http.get(self.base_url + sample["image"]) as image:
                        self.image_bytes += len(await image.read())
                        self.images += 1


async def measure(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Percent of one core each process used over the next ``seconds``."""
    before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - started
    return {name: 100 * (proc_cpu_s(pid) - before[name]) / wall for name, pid in pids.items()}


def line(label: str, cpu: dict[str, float]) -> str:
    return (f"{label:<22} console off {cpu['off']:5.1f} %   console on {cpu['on']:5.1f} %   "
            f"difference {cpu['on'] - cpu['off']:+5.1f} % of one core")


async def bench(args: argparse.Namespace, workdir: Path) -> None:
    """Start everything, measure both windows, print the figures."""
    clips = await asyncio.to_thread(scene_clips, args.cache)
    broker = MosquittoBroker()
    await asyncio.to_thread(broker.start)
    sim_port = free_port()
    sim = start_sim(sim_port, args.vlm_latency, workdir / "sim.log")
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"off": free_port(), "on": free_port()}
    try:
        for name, port in ports.items():
            config = workdir / f"{name}.toml"
            write_config(config, name=name, console=name == "on", cameras=args.cameras,
                         clips=clips, vlm_port=sim_port, broker=broker, port=port)
            daemons[name] = await asyncio.to_thread(start_daemon, config,
                                                    workdir / f"{name}.log")
        for port in ports.values():
            if not await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 60):
                raise SystemExit(f"a daemon did not start; logs in {workdir}")
        pids = {name: process.pid for name, process in daemons.items()}
        print(f"{args.cameras} cameras per daemon; warm-up {args.warmup_s:.0f} s, windows of "
              f"{args.window_s:.0f} s", flush=True)
        await asyncio.sleep(args.warmup_s)
        quiet = await measure(pids, args.window_s)
        print(line("no viewer:", quiet), flush=True)
        viewer = Viewer(f"http://127.0.0.1:{ports['on']}")
        follow = asyncio.create_task(viewer.run(), name="bench.viewer")
        await asyncio.sleep(2)  # connected and fetching
        watched = await measure(pids, args.window_s)
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        print(line("one viewer on 'on':", watched), flush=True)
        print(f"the viewer got {viewer.updates} live updates and {viewer.images} JPEGs "
              f"({viewer.image_bytes / 1e6:.1f} MB) in {args.window_s + 2:.0f} s", flush=True)
        print(f"goal: ~0 without a viewer ({quiet['on'] - quiet['off']:+.1f} %), at most 3 % "
              f"of one core with one ({watched['on'] - watched['off']:+.1f} %)", flush=True)
    finally:
        for process in daemons.values():
            await asyncio.to_thread(stop, process)
        await asyncio.to_thread(stop, sim)
        await asyncio.to_thread(broker.stop)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cameras", type=int, default=48)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--vlm-latency", type=float, default=0.2,
                        help="simulated model latency, seconds")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="monitor-bench-console-") as workdir:
        asyncio.run(bench(args, Path(workdir)))


if __name__ == "__main__":
    main()
