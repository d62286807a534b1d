"""The ``monitor`` command: ``run``, ``demo``, ``check-config``, ``sim-vlm``, ``sim-scene``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor.config import DEFAULT_CONFIG_PATH, EX_CONFIG, ConfigError, MonitorConfig, load_config

logger = logging.getLogger("monitor")

EX_UNAVAILABLE = 69
"""sysexits.h: a service the command needs is missing."""


def setup_logging(level: str) -> None:
    """Log lines to stderr (journald adds its own timestamps under systemd)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party clients log every request at INFO; keep ours readable.
    for noisy in ("httpx", "openai", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load_or_exit(path: Path) -> MonitorConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


async def _run_until_signalled(config: MonitorConfig) -> None:
    from monitor.daemon import Daemon  # noqa: PLC0415 - keeps `check-config` light

    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)
    await Daemon(config).run(shutdown)


def cmd_run(args: argparse.Namespace) -> int:
    """``monitor run``: the daemon."""
    config = _load_or_exit(args.config)
    setup_logging(args.log_level or config.logging.level)
    asyncio.run(_run_until_signalled(config))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """``monitor check-config``: validate and print the effective configuration."""
    config = _load_or_exit(args.config)
    print(json.dumps(config.masked(), indent=2, ensure_ascii=False))
    enabled = sum(1 for camera in config.cameras if camera.enabled)
    print(f"# {args.config}: valid; {enabled} enabled camera(s)", file=sys.stderr)
    return 0


def cmd_sim_vlm(args: argparse.Namespace) -> int:
    """``monitor sim-vlm``: the OpenAI-compatible VLM simulator."""
    from monitor.sim.server import SimBehaviour, run_sim_server  # noqa: PLC0415

    setup_logging(args.log_level or "INFO")
    behaviour = SimBehaviour(latency_s=args.latency, fail_rate=args.fail_rate,
                             bad_answer_rate=args.bad_answer_rate)
    run_sim_server(args.host, args.port, behaviour, args.model)
    return 0


def cmd_sim_scene(args: argparse.Namespace) -> int:
    """``monitor sim-scene``: write a synthetic scene as an H.264 video file."""
    from monitor.sim.scenes import PRESETS, write_scene  # noqa: PLC0415

    if args.preset not in PRESETS:
        print(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}",
              file=sys.stderr)
        return 2
    scene = PRESETS[args.preset](width=args.width, height=args.height, fps=args.fps,
                                 gop=args.gop)
    write_scene(scene, args.output)
    print(f"wrote {args.output}: {scene.width}x{scene.height} {scene.fps} fps, "
          f"GOP {scene.gop}, {scene.duration_s:g} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``monitor demo``: synthetic cameras, the simulator, a broker, live alerts."""
    from monitor.demo import DemoError, run_demo  # noqa: PLC0415

    setup_logging(args.log_level or "WARNING")
    try:
        return asyncio.run(run_demo(duration_s=args.duration, mqtt_host=args.mqtt_host,
                                    mqtt_port=args.mqtt_port, language=args.language))
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``monitor`` command."""
    parser = argparse.ArgumentParser(
        prog="monitor", description="Real-time camera-stream safety monitor (fire, smoke, "
        "hard hats) with Qwen2.5-VL on vLLM and MQTT alerts.")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="override the configured log level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG_PATH,
                         help=f"configuration file (default {DEFAULT_CONFIG_PATH})")

    run = commands.add_parser("run", help="run the daemon")
    config_option(run)
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check-config", help="validate and print the configuration")
    config_option(check)
    check.set_defaults(handler=cmd_check_config)

    demo = commands.add_parser("demo", help="synthetic cameras + simulator + live alerts")
    demo.add_argument("--duration", type=float, default=60.0,
                      help="seconds to run (default 60)")
    demo.add_argument("--mqtt-host", help="use this broker instead of starting mosquitto")
    demo.add_argument("--mqtt-port", type=int, default=1883, help="with --mqtt-host")
    demo.add_argument("--language", choices=["zh", "en"], default="en",
                      help="prompt language (default en, so the demo output reads in English)")
    demo.set_defaults(handler=cmd_demo)

    sim = commands.add_parser("sim-vlm", help="serve the VLM simulator (OpenAI API)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000)
    sim.add_argument("--model", default="Qwen2.5-VL", help="served model name")
    sim.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share answered with 500")
    sim.add_argument("--bad-answer-rate", type=float, default=0.0,
                     help="share answered with unparseable text")
    sim.set_defaults(handler=cmd_sim_vlm)

    scene = commands.add_parser("sim-scene", help="write a synthetic H.264 scene")
    scene.add_argument("preset", help="fire, smoke, no_helmet or quiet")
    scene.add_argument("output", type=Path)
    scene.add_argument("--width", type=int, default=640)
    scene.add_argument("--height", type=int, default=360)
    scene.add_argument("--fps", type=int, default=10)
    scene.add_argument("--gop", type=int, default=20)
    scene.set_defaults(handler=cmd_sim_scene)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitor`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
