"""The ``monitor`` command: ``run`` (the daemon), ``check-config``, ``doctor``, ``analyze``,
``probe``, ``eval``, ``demo``, ``download-model``, ``sim-vlm`` and ``sim-scene``."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from monitor import heap
from monitor.alerts.siterules import SiteRules, describe
from monitor.config import DEFAULT_CONFIG_PATH, EX_CONFIG, ConfigError, MonitorConfig, load_config
from monitor.model.answer import Hazard
from monitor.redaction import redact, register_secrets
from monitor.service.logs import LogFormat
from monitor.service.logs import setup_logging as configure_logging

logger = logging.getLogger("monitor")

EX_UNAVAILABLE = 69
"""sysexits.h: a service the command needs is missing."""
EX_SOFTWARE = 70
"""sysexits.h: internal software error."""


def emit(*parts: object, file: TextIO | None = None, flush: bool = False) -> None:
    """``print`` for everything a command writes: secrets a server echoed back in an error
    text are masked like in the logs (:mod:`monitor.redaction`)."""
    print(redact(" ".join(str(part) for part in parts)), file=file or sys.stdout, flush=flush)


def setup_logging(level: str, log_format: LogFormat = "auto",
                  secrets: list[str] | None = None) -> None:
    """Log lines to stderr, credentials redacted (see :mod:`monitor.service.logs`)."""
    configure_logging(level, log_format, secrets or [])


def _load_or_exit(path: Path) -> MonitorConfig:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            emit(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
    register_secrets(config.secret_values())
    return config


async def _run_until_signalled(config: MonitorConfig, path: Path) -> None:
    from monitor.alerts.outbox import OutboxError  # noqa: PLC0415
    from monitor.service.supervisor import Supervisor  # noqa: PLC0415 - keeps `check-config` light

    shutdown = asyncio.Event()
    reloads: asyncio.Queue[MonitorConfig] = asyncio.Queue(maxsize=1)
    loop = asyncio.get_running_loop()

    def on_stop_signal(signum: signal.Signals) -> None:
        if shutdown.is_set():
            # A second signal: the operator does not want to wait for the ordered shutdown.
            logger.warning("%s again: exiting at once", signum.name)
            os._exit(128 + signum)
        logger.info("%s: stopping (send it again to exit at once)", signum.name)
        shutdown.set()

    def on_reload_signal() -> None:
        try:
            new = load_config(path)
        except ConfigError as exc:
            problems = exc.problems
        else:
            problems = []
        if problems:
            # The errors themselves are the message; a traceback would only hide them.
            logger.error("SIGHUP: new configuration rejected, the running one stays: %s",
                         "; ".join(problems))
            return
        if reloads.full():
            reloads.get_nowait()  # only the newest pending configuration matters
        reloads.put_nowait(new)
        logger.info("SIGHUP: configuration %s loaded; applying", path)

    try:
        supervisor = Supervisor.open(config)
    except OutboxError as exc:
        # The state directory is unusable: a deployment problem that restarting won't fix.
        raise StartupError(str(exc)) from exc
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_reload_signal)
    dump_dir = heap.memory_debug_dir(os.environ)
    if dump_dir is not None:
        # Opt-in diagnostics (bench/soak.py --memory-debug): each SIGUSR2 writes dump-NN.*.
        dumps = itertools.count(1)

        def on_dump_signal() -> None:
            label = f"dump-{next(dumps):02d}"
            written = heap.dump_memory(dump_dir, label)
            logger.info("SIGUSR2: memory dump %s: %s", label,
                        ", ".join(path.name for path in written) or "nothing to write")

        loop.add_signal_handler(signal.SIGUSR2, on_dump_signal)
    await supervisor.run(shutdown, reloads)


class StartupError(Exception):
    """The daemon cannot start with this configuration on this machine (exit 78)."""


def cmd_run(args: argparse.Namespace) -> int:
    """``monitor run``: the daemon."""
    config = _load_or_exit(args.config)
    setup_logging(args.log_level or config.logging.level, config.logging.format,
                  config.secret_values())
    try:
        asyncio.run(_run_until_signalled(config, args.config))
    except StartupError as exc:
        logger.error("cannot start: %s", exc)  # noqa: TRY400 - the message says it all
        return EX_CONFIG
    except Exception:
        # A core component failed (a bug, not an outage): exit non-zero so systemd restarts us.
        logger.critical("monitor failed", exc_info=True)
        return EX_SOFTWARE
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``monitor doctor``: check config, state dir, broker, model server and cameras."""
    from monitor.tools.doctor import doctor  # noqa: PLC0415

    setup_logging(args.log_level or "ERROR")
    return doctor(args.config, lambda line: emit(line, flush=True))


def cmd_check_config(args: argparse.Namespace) -> int:
    """``monitor check-config``: validate and print the effective configuration."""
    config = _load_or_exit(args.config)
    emit(json.dumps(config.masked(), indent=2, ensure_ascii=False))
    enabled = sum(1 for camera in config.cameras if camera.enabled)
    emit(f"# {args.config}: valid; {enabled} enabled camera(s)", file=sys.stderr)
    for camera in config.cameras:
        hazards = [Hazard(name) for name in config.camera_hazards(camera)]
        for line in describe(SiteRules.from_config(config, camera), hazards, time.time()):
            emit(f"# camera {camera.id}: {line}", file=sys.stderr)
    return 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    """``monitor notify-test CHANNEL``: one test message; prints what the service answered."""
    from monitor.tools.notifytest import UnknownChannelError, notify_test  # noqa: PLC0415

    config = _load_or_exit(args.config)
    setup_logging(args.log_level or "WARNING", "text", config.secret_values())
    try:
        delivered, line = asyncio.run(notify_test(config, args.channel))
    except UnknownChannelError as exc:
        emit(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    emit(line)
    return 0 if delivered else 1


def cmd_sim_vlm(args: argparse.Namespace) -> int:
    """``monitor sim-vlm``: the OpenAI-compatible VLM simulator."""
    from monitor.sim.server import SimBehaviour, run_sim_server  # noqa: PLC0415

    setup_logging(args.log_level or "INFO")
    try:
        behaviour = SimBehaviour(latency_s=args.latency, fail_rate=args.fail_rate,
                                 bad_answer_rate=args.bad_answer_rate,
                                 latency_per_image_token_s=args.latency_per_image_token,
                                 batch_capacity=args.batch_capacity, fault=args.fault)
    except (TypeError, ValueError) as exc:
        emit(f"sim-vlm: {exc}", file=sys.stderr)
        return 2
    run_sim_server(args.host, args.port, behaviour, args.model)
    return 0


def cmd_sim_scene(args: argparse.Namespace) -> int:
    """``monitor sim-scene``: write a synthetic scene as an H.264 or H.265 video file."""
    from monitor.sim.scenes import PRESETS, write_scene  # noqa: PLC0415

    if args.preset not in PRESETS:
        emit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}",
              file=sys.stderr)
        return 2
    scene = PRESETS[args.preset](width=args.width, height=args.height, fps=args.fps,
                                 gop=args.gop)
    write_scene(scene, args.output, codec=args.codec)
    emit(f"wrote {args.output}: {args.codec.upper()} {scene.width}x{scene.height} "
          f"{scene.fps} fps, GOP {scene.gop}, {scene.duration_s:g} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``monitor demo``: synthetic cameras, the simulator, a broker, live alerts."""
    from monitor.tools.demo import DemoError, run_demo  # noqa: PLC0415

    setup_logging(args.log_level or "WARNING")
    try:
        return asyncio.run(run_demo(duration_s=args.duration, mqtt_host=args.mqtt_host,
                                    mqtt_port=args.mqtt_port, language=args.language,
                                    console_port=args.console_port))
    except DemoError as exc:
        emit(f"demo: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def cmd_download_model(args: argparse.Namespace) -> int:
    """``monitor download-model``: fetch Qwen2.5-VL from ModelScope, check what arrived."""
    from monitor.tools.modeldl import main as download_main  # noqa: PLC0415

    return download_main(args)


def _model_config(args: argparse.Namespace) -> MonitorConfig:
    """``-c PATH`` if given (else built-in defaults and ``MONITOR_`` variables), with the
    command line's model options applied to ``[vlm]``."""
    from monitor.config import VlmConfig, config_from_mapping  # noqa: PLC0415

    if args.config is not None:
        config = _load_or_exit(args.config)
    else:
        try:
            config = config_from_mapping({}, source="defaults")
        except ConfigError as exc:
            for problem in exc.problems:
                emit(f"config error: {problem}", file=sys.stderr)
            raise SystemExit(EX_CONFIG) from None
    data = config.vlm.model_dump(exclude_unset=True)
    if getattr(args, "base_url", None):
        data["base_url"] = args.base_url
        data.pop("endpoints", None)  # one server named on the command line replaces the pool
    for option, key in (("model", "model"), ("language", "language"),
                        ("max_pixels", "max_pixels"), ("timeout", "timeout_s")):
        if getattr(args, option, None) is not None:
            data[key] = getattr(args, option)
    try:
        vlm = VlmConfig.model_validate(data)
    except ValueError as exc:
        emit(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    config = config.model_copy(update={"vlm": vlm})
    register_secrets(config.secret_values())
    return config


def cmd_analyze(args: argparse.Namespace) -> int:
    """``monitor analyze IMAGE...``: one verdict per image, through the production path."""
    from monitor.tools.analyze import analyse_sources, exit_code, format_result  # noqa: PLC0415

    setup_logging(args.log_level or "WARNING")
    config = _model_config(args)
    from monitor.model.answer import Hazard  # noqa: PLC0415

    hazards = [Hazard(name) for name in args.hazards] if args.hazards else None
    results = asyncio.run(analyse_sources(config.vlm, args.images, context=args.context,
                                          hazards=hazards))
    if args.json:
        emit(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
    else:
        for result in results:
            emit(format_result(result, raw=args.raw))
    return exit_code(results)


def cmd_probe(args: argparse.Namespace) -> int:
    """``monitor probe CAMERA``: grab one frame of a configured camera, save, analyse."""
    from monitor.tools.analyze import (  # noqa: PLC0415
        EX_DATAERR,
        ProbeDataError,
        ProbeError,
        exit_code,
        format_result,
        probe_camera,
    )

    setup_logging(args.log_level or "WARNING")
    config = _model_config(args)
    out = args.out or Path(f"probe-{args.camera}.jpg")
    try:
        result = asyncio.run(probe_camera(config, args.camera, out))
    except ProbeError as exc:
        emit(f"probe: {exc}", file=sys.stderr)
        return EX_DATAERR if isinstance(exc, ProbeDataError) else EX_UNAVAILABLE
    if args.json:
        emit(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        emit(f"camera {args.camera}: frame saved to {out}")
        emit(format_result(result, raw=args.raw))
    return exit_code([result])


def cmd_eval(args: argparse.Namespace) -> int:
    """``monitor eval DIR``: precision, recall, F1 per hazard on labelled images."""
    from monitor.tools.evaluate import EvalError, evaluate_dir, format_report  # noqa: PLC0415

    setup_logging(args.log_level or "WARNING")
    config = _model_config(args)
    try:
        report = asyncio.run(evaluate_dir(config.vlm, args.directory, manifest=args.manifest,
                                          context=args.context))
    except EvalError as exc:
        emit(f"eval: {exc}", file=sys.stderr)
        return 65  # EX_DATAERR: the manifest or an image is wrong
    if args.json:
        emit(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        emit(format_report(report))
    return EX_UNAVAILABLE if report.unavailable == report.total and report.total else 0


def _add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``analyze``, ``probe`` and ``eval``: the model client used from the command line."""

    def model_options(sub: argparse.ArgumentParser, *, config_required: bool = False) -> None:
        sub.add_argument("-c", "--config", type=Path, required=config_required,
                         default=None, help="configuration file (its [vlm] section is used; "
                         "default: built-in defaults and MONITOR_ variables)")
        sub.add_argument("--base-url", help="model server API root, e.g. "
                         "http://127.0.0.1:8000/v1 (replaces the configured endpoints)")
        sub.add_argument("--model", help="served model name")
        sub.add_argument("--language", choices=["zh", "en"], help="prompt language")
        sub.add_argument("--max-pixels", type=int, help="pixel budget of the image sent")
        sub.add_argument("--timeout", type=float, help="seconds per request")
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    analyze = commands.add_parser(
        "analyze", help="analyse image files, URLs or stdin (-) once and print the verdicts")
    analyze.add_argument("images", nargs="+", metavar="IMAGE",
                         help="a file path, an http(s) URL, or - for standard input")
    model_options(analyze)
    analyze.add_argument("--raw", action="store_true", help="also print the model's text")
    analyze.add_argument("--context", default="", help="camera context sent after the image")
    analyze.add_argument("--hazards", nargs="+", choices=["fire", "smoke", "no_helmet"],
                         help="only these questions matter (default: all)")
    analyze.set_defaults(handler=cmd_analyze)

    probe = commands.add_parser(
        "probe", help="grab one frame of a configured camera, save it and analyse it")
    probe.add_argument("camera", metavar="CAMERA_ID")
    model_options(probe, config_required=True)
    probe.add_argument("--out", type=Path, help="where to save the frame "
                       "(default probe-CAMERA_ID.jpg)")
    probe.add_argument("--raw", action="store_true", help="also print the model's text")
    probe.set_defaults(handler=cmd_probe)

    evaluation = commands.add_parser(
        "eval", help="precision/recall/F1 of the model on a folder of labelled images")
    evaluation.add_argument("directory", type=Path, metavar="DIR")
    evaluation.add_argument("--manifest", type=Path,
                            help="labels file (default DIR/manifest.csv)")
    evaluation.add_argument("--context", default="", help="context sent after each image")
    model_options(evaluation)
    evaluation.set_defaults(handler=cmd_eval)


def cmd_eval_video(args: argparse.Namespace) -> int:
    """``monitor eval-video DIR``: the pipeline over recorded clips, scored as events."""
    from monitor.tools.eventeval import main as eval_video  # noqa: PLC0415

    setup_logging(args.log_level or "WARNING")
    return eval_video(args)


def cmd_sim_clips(args: argparse.Namespace) -> int:
    """``monitor sim-clips DIR``: a synthetic labelled clip set with look-alikes."""
    from monitor.sim.clips import write_clip_set  # noqa: PLC0415

    for path in write_clip_set(args.directory, duration_s=args.duration):
        emit(f"wrote {path}")
    emit(f"wrote {args.directory / 'labels.csv'}, whole-frame.toml, zoom-in.toml")
    return 0


def _add_event_eval_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                             ) -> None:
    """``eval-video`` and ``sim-clips`` (issue #17: event-level evaluation)."""
    from monitor.tools.eventeval import add_arguments  # noqa: PLC0415

    video = commands.add_parser(
        "eval-video", help="run the pipeline over labelled clips: incidents caught, false "
        "alarms per camera-hour, time to alert, tokens")
    add_arguments(video)
    video.set_defaults(handler=cmd_eval_video)
    clips = commands.add_parser(
        "sim-clips", help="write a synthetic labelled clip set (with look-alikes) for eval-video")
    clips.add_argument("directory", type=Path, metavar="DIR")
    clips.add_argument("--duration", type=float, default=20.0, help="seconds per clip")
    clips.set_defaults(handler=cmd_sim_clips)


def _add_simulator_commands(
        commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sim-vlm`` and ``sim-scene``: the simulator and its synthetic scenes."""
    sim = commands.add_parser("sim-vlm", help="serve the VLM simulator (OpenAI API)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000)
    sim.add_argument("--model", default="Qwen2.5-VL", help="served model name")
    sim.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share answered with 500")
    sim.add_argument("--bad-answer-rate", type=float, default=0.0,
                     help="share answered with unparseable text")
    sim.add_argument("--latency-per-image-token", type=float, default=0.0,
                     help="seconds of service per image token (GPU model)")
    sim.add_argument("--batch-capacity", type=int, default=0,
                     help="requests served at once; more wait in order (0: no limit)")
    sim.add_argument("--fault", default="", help="a fault for every request: 500, 503, 429, "
                     "timeout, reset, bad_body, malformed_json, schema_violation, prose, long, "
                     "empty_choices (per request: header X-Sim-Fault)")
    sim.set_defaults(handler=cmd_sim_vlm)

    scene = commands.add_parser("sim-scene", help="write a synthetic H.264/H.265 scene")
    scene.add_argument("preset", help="fire, smoke, no_helmet or quiet")
    scene.add_argument("output", type=Path)
    scene.add_argument("--width", type=int, default=640)
    scene.add_argument("--height", type=int, default=360)
    scene.add_argument("--fps", type=int, default=10)
    scene.add_argument("--gop", type=int, default=20)
    scene.add_argument("--codec", choices=("h264", "h265"), default="h264")
    scene.set_defaults(handler=cmd_sim_scene)


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

    doctor = commands.add_parser(
        "doctor", help="check config, state dir, broker, model server and every camera")
    config_option(doctor)
    doctor.set_defaults(handler=cmd_doctor)

    notify = commands.add_parser(
        "notify-test", help="send one test message on a [[notify]] channel")
    notify.add_argument("channel", help="the channel's name")
    config_option(notify)
    notify.set_defaults(handler=cmd_notify_test)

    demo = commands.add_parser("demo", help="synthetic cameras + simulator + live alerts")
    demo.add_argument("--duration", type=float, default=60.0,
                      help="seconds to run (default 60)")
    demo.add_argument("--mqtt-host", help="use this broker instead of starting mosquitto")
    demo.add_argument("--mqtt-port", type=int, default=1883, help="with --mqtt-host")
    demo.add_argument("--language", choices=["zh", "en"], default="en",
                      help="prompt language (default en, so the demo output reads in English)")
    demo.add_argument("--console-port", type=int, default=0,
                      help="operator console port on 127.0.0.1 (default: a free one, printed)")
    demo.set_defaults(handler=cmd_demo)

    _add_simulator_commands(commands)

    from monitor.tools.modeldl import add_arguments as download_arguments  # noqa: PLC0415

    download = commands.add_parser(
        "download-model", help="download Qwen2.5-VL from ModelScope and check what arrived")
    download_arguments(download)
    download.set_defaults(handler=cmd_download_model)
    _add_model_commands(commands)
    _add_event_eval_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitor`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
