"""`monitor analyze`, `monitor eval` and `monitor probe` end to end against the simulator."""

from __future__ import annotations

import asyncio
import csv
import functools
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from monitor.sim.scenes import PRESETS, expected_answer, render_frame
from monitor.sim.server import SimServer
from monitor.tools.cli import main
from monitor.tools.evaluate import EvalError, read_manifest


class ThreadedSim:
    """The simulator on an event loop of its own thread (the CLI runs its own asyncio.run)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = SimServer()

    def __enter__(self) -> ThreadedSim:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def set_behaviour(self, **changes: Any) -> None:
        async def apply() -> None:
            self.server.set_behaviour(**changes)
        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(10)


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadedSim]:
    with ThreadedSim() as server:
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scene frames as files: 1280x720 JPEGs (and one PNG) at scripted moments."""
    directory = tmp_path_factory.mktemp("images")
    shots = {"fire": ("fire", 8.0, ".jpg"), "no_helmet": ("no_helmet", 8.0, ".png"),
             "smoke": ("smoke", 9.0, ".jpg"), "quiet": ("quiet", 5.0, ".jpg"),
             "before_fire": ("fire", 1.0, ".jpg"), "after_smoke": ("smoke", 20.0, ".jpg")}
    paths = {}
    for name, (preset, t, suffix) in shots.items():
        frame = render_frame(PRESETS[preset](width=1280, height=720), t)
        path = directory / f"{name}{suffix}"
        assert cv2.imwrite(str(path), frame)
        paths[name] = path
    return paths


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_prints_each_verdict_with_latency_and_tokens(
    sim: ThreadedSim, images: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "analyze", str(images["fire"]), str(images["no_helmet"]),
                           "--base-url", sim.server.base_url, "--language", "en")
    assert code == 0
    fire_line, fire_cost, helmet_line, _helmet_cost = out.splitlines()
    assert "fire yes (bottom-left" in fire_line
    assert "smoke no" in fire_line
    assert "hard hats all_worn" in fire_line
    assert "prompt +" in fire_cost
    assert "1280x720 sent as" in fire_cost
    assert "hard hats some_missing, 1 without at [" in helmet_line


def test_analyze_json_has_boxes_in_the_original_pixels(
    sim: ThreadedSim, images: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "analyze", str(images["no_helmet"]), "--json", "--base-url",
                           sim.server.base_url, "--max-pixels", str(256 * 28 * 28))
    assert code == 0
    (result,) = json.loads(out)
    assert result["ok"] is True
    assert result["image"]["width"] == 1280
    assert result["image"]["sent_width"] < 1280
    (box,) = result["answer"]["helmet"]["boxes"]
    x1, _y1, x2, y2 = box["bbox_2d"]
    assert x1 < 0.70 * 1280 < x2  # the worker without a hat, in 1280x720 pixels
    assert y2 <= 720
    assert result["prompt_tokens"] > 256
    assert result["completion_tokens"] > 0
    assert result["raw"].startswith("{")


def test_analyze_stdin_and_url(sim: ThreadedSim, images: dict[str, Path],
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(images["fire"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/smoke.jpg"
        missing = f"http://127.0.0.1:{server.server_address[1]}/nope.jpg"

        class Stdin:
            buffer = io.BytesIO(images["fire"].read_bytes())

        monkeypatch.setattr("sys.stdin", Stdin)
        code, out, _ = run_cli(capsys, "analyze", "-", url, missing, "--base-url",
                               sim.server.base_url, "--json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    stdin_result, url_result, missing_result = json.loads(out)
    assert stdin_result["answer"]["fire"]["answer"] == "yes"
    assert url_result["answer"]["smoke"]["answer"] == "yes"
    assert missing_result["failure"] == "bad_image"
    assert "HTTP 404" in missing_result["error"]
    assert code == 65


def test_analyze_raw_and_bad_answers(sim: ThreadedSim, images: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    sim.set_behaviour(fault="prose")
    try:
        code, out, _ = run_cli(capsys, "analyze", str(images["quiet"]), "--raw",
                               "--base-url", sim.server.base_url)
    finally:
        sim.set_behaviour(fault="")
    assert code == 1
    assert "NOT ANALYSED (invalid_answer)" in out
    assert "raw: " in out


def test_analyze_unreachable_server_exits_69(images: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "analyze", str(images["quiet"]), "--base-url",
                           "http://127.0.0.1:9/v1", "--timeout", "2")
    assert code == 69
    assert "cannot connect" in out


def test_analyze_bad_image_exits_65(tmp_path: Path, sim: ThreadedSim,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    code, out, _ = run_cli(capsys, "analyze", str(junk), str(tmp_path / "absent.jpg"),
                           "--base-url", sim.server.base_url)
    assert code == 65
    assert "cannot decode image" in out
    assert "no such file" in out


# --- eval ---------------------------------------------------------------------------------------


def _write_manifest(directory: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path = directory / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "fire", "smoke", "helmet"])
        writer.writerows(rows)
    return path


def _truth(preset: str, t: float) -> tuple[str, str, str]:
    answer = expected_answer(PRESETS[preset](), t)
    return (answer.fire.answer.value, answer.smoke.answer.value, answer.helmet.status.value)


def test_eval_scores_labelled_images(sim: ThreadedSim, images: dict[str, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    directory = images["fire"].parent
    shots = {"fire": ("fire", 8.0), "no_helmet": ("no_helmet", 8.0), "smoke": ("smoke", 9.0),
             "quiet": ("quiet", 5.0), "before_fire": ("fire", 1.0),
             "after_smoke": ("smoke", 20.0)}
    rows = [(images[name].name, *_truth(*shot)) for name, shot in shots.items()]
    # One wrong label: the quiet scene said to have smoke -> a false negative listed as a miss.
    rows[3] = (rows[3][0], "no", "yes", "")
    _write_manifest(directory, rows)
    code, out, _ = run_cli(capsys, "eval", str(directory), "--json", "--base-url",
                           sim.server.base_url)
    assert code == 0
    report = json.loads(out)
    assert report["images"] == 6
    fire = report["hazards"]["fire"]
    assert (fire["precision"], fire["recall"], fire["f1"]) == (1.0, 1.0, 1.0)
    assert report["hazards"]["no_helmet"]["recall"] == 1.0
    smoke = report["hazards"]["smoke"]
    assert smoke["recall"] == 0.5
    assert smoke["confusion"]["yes"] == {"yes": 1, "no": 1, "uncertain": 0, "failed": 0}
    assert report["misses"] == [{"image": "quiet.jpg", "hazard": "smoke", "truth": "yes",
                                 "predicted": "no", "detail": ""}]
    assert report["helmet_confusion"]["some_missing"]["some_missing"] == 1
    assert report["latency_s"]["p50"] is not None
    code, text, _ = run_cli(capsys, "eval", str(directory), "--base-url", sim.server.base_url)
    assert "precision" in text
    assert "quiet.jpg: smoke is yes, model said no" in text


def test_eval_manifest_errors_name_the_line(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path, [("a.jpg", "yes", "no", "all_worn"),
                                      ("b.jpg", "maybe", "no", "")])
    with pytest.raises(EvalError, match=r"manifest.csv:3: fire is 'maybe'"):
        read_manifest(path)
    (tmp_path / "other.csv").write_text("file,fire\nx,yes\n")
    with pytest.raises(EvalError, match="header row"):
        read_manifest(tmp_path / "other.csv")


# --- probe --------------------------------------------------------------------------------------


def test_probe_grabs_saves_and_analyses(sim: ThreadedSim, scene_clips: dict[str, Path],
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f'[[cameras]]\nid = "scaffold"\nurl = "{scene_clips["no_helmet"]}"\n'
                      f'loop = true\ncontext = "Scaffolding; hard hats required."\n',
                      encoding="utf-8")
    out = tmp_path / "frame.jpg"
    code, text, err = run_cli(capsys, "probe", "scaffold", "-c", str(config), "--out", str(out),
                              "--base-url", sim.server.base_url, "--json")
    assert code == 0, (text, err)
    result = json.loads(text)
    assert result["camera"] == "scaffold"
    assert result["saved"] == str(out)
    assert cv2.imread(str(out)) is not None
    assert result["ok"] is True
    code, _, err = run_cli(capsys, "probe", "nope", "-c", str(config), "--base-url",
                           sim.server.base_url)
    assert code == 69
    assert "no camera 'nope'" in err


def test_analyze_an_empty_file_says_so_and_exits_65(
    sim: ThreadedSim, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    code, text, err = run_cli(capsys, "analyze", str(empty), "--base-url", sim.server.base_url)
    assert code == 65, (text, err)
    assert f"{empty}: the file is empty (0 bytes), not an image" in text
    assert "Traceback" not in text + err


def test_decoding_empty_bytes_is_a_named_error_not_an_opencv_assertion() -> None:
    from monitor.model.imaging import decode_jpeg  # noqa: PLC0415

    with pytest.raises(ValueError, match="empty"):
        decode_jpeg(b"")


@pytest.mark.rtsp
def test_probe_stops_at_the_first_refusal(
    sim: ThreadedSim, scene_clips: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password cannot succeed on a retry: one attempt, one warning, the reason."""
    from tests.support.rtsp import RtspServer, rtsp_server_available  # noqa: PLC0415

    available, reason = rtsp_server_available()
    if not available:
        pytest.skip(reason)
    with RtspServer({"cam": scene_clips["quiet"]}, shared=True, user="viewer",
                    password="right") as server:
        config = tmp_path / "monitor.toml"
        config.write_text(f'[[cameras]]\nid = "gate"\nurl = "{server.url("cam")}"\n'
                          f'username = "viewer"\npassword = "wrong"\n', encoding="utf-8")
        started = time.monotonic()
        code, text, err = run_cli(capsys, "probe", "gate", "-c", str(config), "--out",
                                  str(tmp_path / "frame.jpg"), "--base-url",
                                  sim.server.base_url)
        took = time.monotonic() - started
    assert code == 69, (text, err)
    assert "unauthorized" in err
    assert took < 5.0  # no backoff: before, four attempts took about 11 s
    warnings = [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(warnings) <= 1, [r.getMessage() for r in warnings]
