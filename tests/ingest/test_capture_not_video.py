"""Sources that FFmpeg opens but that are no camera video (a text file, rendered by FFmpeg as
ANSI art; bytes it cannot decode at all), read from real files and from a real HTTP server,
and the exit code of ``monitor probe`` and ``monitor analyze`` on them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.ingest.decode import opencv_refusal, video_refusal
from monitor.ingest.reader import CameraReader
from monitor.ingest.source import NOT_VIDEO, StreamSource
from monitor.tools.cli import main
from tests.support.http_camera import HttpCamera, _Handler
from tests.support.readers import running, wait_until

TEXT = "".join(f"line {n}: the quick brown fox jumps over the lazy dog\n" for n in range(200))
"""Enough text for FFmpeg's tty demuxer to take a .txt file (or URL) as ANSI art."""


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(TEXT)
    return path


@dataclass(frozen=True)
class StaticText:
    """An HTTP server's answer to every path: :data:`TEXT` as ``text/plain``."""

    def serve(self, handler: _Handler, stop: threading.Event) -> None:
        """Answer with the text."""
        del stop  # one short answer
        body = TEXT.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def refused(url: str, expected: str) -> None:
    """A reader of ``url`` goes offline with ``expected`` as its error, never online."""
    reader = CameraReader(StreamSource("cam", url, open_timeout_s=5.0, read_timeout_s=5.0))
    with running(reader):
        wait_until(lambda: reader.status.reconnects >= 1, 10, "the source refused")
        status = reader.status
    assert status.last_error == expected
    assert status.not_video
    assert status.frames_read == 0
    assert status.width is None  # it never went online


@pytest.mark.parametrize(
    ("format_name", "codec", "refusal"),
    [("tty", "ansi", "tty/ansi (text or a still image)"),
     ("image2", "mjpeg", "image2/mjpeg (text or a still image)"),
     ("jpeg_pipe", "mjpeg", "jpeg_pipe/mjpeg (text or a still image)"),
     ("gif", "gif", "gif/gif (text or a still image)"),
     ("matroska,webm", "theora", "matroska,webm/theora (not a camera's video codec)"),
     ("mp3", None, "mp3 (no video track)"),
     ("rtsp", "h264", None), ("rtsp", "hevc", None), ("mpjpeg", "mjpeg", None),
     ("hls", "h264", None), ("mov,mp4,m4a,3gp,3g2,mj2", "h264", None),
     ("video4linux2,v4l2", "rawvideo", None), ("matroska,webm", "vp9", None)])
def test_only_camera_video_is_accepted(format_name: str, codec: str | None,
                                       refusal: str | None) -> None:
    expected = f"{NOT_VIDEO}: {refusal}" if refusal else None
    assert video_refusal(format_name, codec) == expected


def test_a_text_file_is_refused(text_file: Path) -> None:
    refused(str(text_file), f"{NOT_VIDEO}: tty/ansi (text or a still image)")


def test_a_text_file_is_refused_by_the_opencv_backend_too(text_file: Path) -> None:
    reader = CameraReader(StreamSource("cam", str(text_file), backend="opencv",
                                       open_timeout_s=5.0, read_timeout_s=5.0))
    with running(reader):
        wait_until(lambda: reader.status.reconnects >= 1, 10, "the source refused")
        status = reader.status
    assert status.last_error == f"{NOT_VIDEO}: ansi (text or a still image, as OpenCV reads it)"
    assert status.not_video
    assert status.frames_read == 0


@pytest.mark.parametrize(("tag", "refused_as"), [(b"ansi", "ansi"), (b"gif\0", "gif"),
                                                 (b"png ", "png"), (b"avc1", None),
                                                 (b"H264", None), (b"mjpe", None),
                                                 (b"\0\0\0\0", None)])
def test_opencv_codec_tags_of_text_and_stills_are_refused(tag: bytes,
                                                          refused_as: str | None) -> None:
    refusal = opencv_refusal(int.from_bytes(tag, "little"))
    if refused_as is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.startswith(f"{NOT_VIDEO}: {refused_as} ")


def test_a_file_that_cannot_be_decoded_says_so(tmp_path: Path) -> None:
    path = tmp_path / "recording"  # no extension: FFmpeg probes the bytes and finds nothing
    path.write_text("hello\n")
    refused(str(path), f"{NOT_VIDEO}: the file cannot be decoded "
                       "(Invalid data found when processing input)")


def test_text_served_over_http_is_refused() -> None:
    with HttpCamera(StaticText()) as server:
        refused(server.url("/notes.txt"), f"{NOT_VIDEO}: tty/ansi (text or a still image)")
        refused(server.url("/video"), f"{NOT_VIDEO}: what the server sends cannot be decoded "
                                      "(Invalid data found when processing input)")


def test_probe_and_analyze_of_a_text_file_exit_65(text_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f'[[cameras]]\nid = "notes"\nurl = "{text_file}"\n', encoding="utf-8")
    nowhere = "http://127.0.0.1:9/v1"  # never asked: the source is refused first
    code = main(["probe", "notes", "-c", str(config), "--out", str(tmp_path / "frame.jpg"),
                 "--base-url", nowhere])
    _, err = capsys.readouterr()
    assert code == 65, err
    assert f"{NOT_VIDEO}: tty/ansi" in err
    code = main(["analyze", str(text_file), "--base-url", nowhere])
    out, err = capsys.readouterr()
    assert code == 65, (out, err)
    assert "cannot decode image" in out
