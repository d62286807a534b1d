"""HTTP camera stand-ins for tests: an MJPEG stream and a live HLS playlist, served from a thread.

Cheap IP cameras serve ``multipart/x-mixed-replace`` MJPEG (one JPEG per part, pushed at the
camera's frame rate); others, and restreamers, serve HLS. :class:`HttpCamera` runs Python's
``http.server`` on 127.0.0.1 in a background thread and serves either, closing every socket and
thread it opened when it stops (the test suite turns ResourceWarnings into errors)::

    with HttpCamera(MjpegStream(jpegs, fps=10)) as camera:
        url = camera.url("/video.mjpg")

    with HttpCamera(LiveHls(directory)) as camera:   # from ffmpeg -f hls ... index.m3u8
        url = camera.url("/live.m3u8")              # a live playlist; /index.m3u8 is the VOD
"""

from __future__ import annotations

import contextlib
import http.server
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

HOST = "127.0.0.1"

BOUNDARY = "camboundary"
"""The multipart boundary of :class:`MjpegStream` (as cameras do, not prefixed by ``--``)."""

SOCKET_TIMEOUT_S = 5.0
"""A handler gives up on a client that stops reading for this long."""


class Content(Protocol):
    """What an :class:`HttpCamera` serves: answers one GET request."""

    def serve(self, handler: _Handler, stop: threading.Event) -> None:
        """Answer ``handler``'s request; return soon once ``stop`` is set."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Hands every GET to the server's :class:`Content`."""

    server: _Server
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        try:
            self.server.content.serve(self, self.server.stop_event)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away: nothing more to say

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.requests.append(self.path)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        pass  # quiet: a test's output is its own (timeouts of idle keep-alive connections)


class _Server(http.server.ThreadingHTTPServer):
    # Handler threads are joined by server_close(): none may outlive the test.
    daemon_threads = False
    block_on_close = True

    def __init__(self, content: Content) -> None:
        self.content = content
        self.stop_event = threading.Event()
        self.requests: list[str] = []
        super().__init__((HOST, 0), _Handler)


class HttpCamera:
    """``with HttpCamera(content) as camera:`` serves ``content`` at ``camera.url(path)``."""

    def __init__(self, content: Content) -> None:
        self._server = _Server(content)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="http-camera", daemon=True)

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        port: int = self._server.server_address[1]
        return port

    @property
    def requests(self) -> list[str]:
        """The paths requested so far, in order (one entry per answered request)."""
        return list(self._server.requests)

    def url(self, path: str) -> str:
        """``http://127.0.0.1:PORT/path``."""
        return f"http://{HOST}:{self.port}/{path.lstrip('/')}"

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every stream, stop serving and close the socket; joins all threads."""
        self._server.stop_event.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(SOCKET_TIMEOUT_S)
        self._server.server_close()  # joins the handler threads

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _not_found(handler: _Handler) -> None:
    handler.send_error(404)


@dataclass(frozen=True)
class MjpegStream:
    """``multipart/x-mixed-replace`` MJPEG at ``path``: ``jpegs`` in a loop at ``fps``.

    ``content_length=False`` leaves out each part's ``Content-Length`` (some cameras do; the
    client then finds a frame's end at the next boundary).
    """

    jpegs: Sequence[bytes]
    fps: float = 10.0
    path: str = "/video.mjpg"
    content_length: bool = True

    def serve(self, handler: _Handler, stop: threading.Event) -> None:
        """Push parts until the client goes away or the server stops."""
        if handler.path != self.path:
            _not_found(handler)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        period = 1.0 / self.fps
        due = time.monotonic()
        index = 0
        while not stop.is_set():
            jpeg = self.jpegs[index % len(self.jpegs)]
            headers = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            if self.content_length:
                headers += f"Content-Length: {len(jpeg)}\r\n"
            handler.wfile.write(headers.encode() + b"\r\n" + jpeg + b"\r\n")
            handler.wfile.flush()
            index += 1
            due += period
            stop.wait(max(0.0, due - time.monotonic()))


@dataclass(frozen=True)
class Segment:
    """One media segment of an HLS playlist."""

    name: str
    duration_s: float


def read_vod_playlist(path: Path) -> list[Segment]:
    """The segments of a VOD playlist as ``ffmpeg -f hls -hls_list_size 0`` writes it."""
    segments: list[Segment] = []
    duration: float | None = None
    for line in path.read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line.removeprefix("#EXTINF:").split(",", 1)[0])
        elif line and not line.startswith("#"):
            if duration is None:
                raise ValueError(f"{path}: segment {line!r} has no #EXTINF")
            segments.append(Segment(line, duration))
            duration = None
    if not segments:
        raise ValueError(f"{path}: no segments")
    return segments


class LiveHls:
    """Serves a directory written by ``ffmpeg -f hls`` as a camera's *live* stream.

    ``/live.m3u8`` is a sliding window of at most ``window`` segments without
    ``#EXT-X-ENDLIST``: ``head_start`` segments are there from the start and one more is
    published each time its predecessor's duration has passed, as if the camera were
    recording them now. Every other path is a file of the directory (``/index.m3u8`` is then
    the VOD playlist itself).
    """

    def __init__(self, directory: Path, playlist: str = "index.m3u8", *, window: int = 4,
                 head_start: int = 3) -> None:
        self.directory = directory.resolve()
        self.segments = read_vod_playlist(self.directory / playlist)
        self.window = window
        self.head_start = head_start
        self._started = time.monotonic()

    def published(self, now: float) -> int:
        """How many segments have been published by ``now`` (monotonic)."""
        elapsed = now - self._started
        count = min(self.head_start, len(self.segments))
        recorded = 0.0  # seconds of video recorded since the start, segment by segment
        while count < len(self.segments):
            recorded += self.segments[count].duration_s
            if recorded > elapsed:
                break
            count += 1
        return count

    def playlist(self, now: float) -> str:
        """The live playlist as a client fetching it at ``now`` gets it."""
        end = self.published(now)
        first = max(0, end - self.window)
        target = math.ceil(max(segment.duration_s for segment in self.segments))
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for segment in self.segments[first:end]:
            lines += [f"#EXTINF:{segment.duration_s:.6f},", segment.name]
        return "\n".join(lines) + "\n"

    def serve(self, handler: _Handler, stop: threading.Event) -> None:
        """The live playlist, or a file of the directory."""
        del stop  # every answer is short
        path = handler.path.split("?", 1)[0]
        if path == "/live.m3u8":
            body = self.playlist(time.monotonic()).encode()
            kind = "application/vnd.apple.mpegurl"
        else:
            file = (self.directory / path.lstrip("/")).resolve()
            if file.parent != self.directory or not file.is_file():
                _not_found(handler)
                return
            body = file.read_bytes()
            kind = "application/vnd.apple.mpegurl" if file.suffix == ".m3u8" else "video/mp2t"
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            handler.wfile.write(body)
