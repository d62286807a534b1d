"""How to open a camera's stream, what is known about it, and how a connection fails.

A camera's credentials are typed: :class:`StreamSource` holds the URL without user
information, the user name, and the password as a :class:`~pydantic.SecretStr` (its ``repr``
and ``str`` show ``**********``). The URL with the credentials in it is built only by the call
that opens the stream (:meth:`StreamSource.opening_url`); every status and log line shows
:attr:`StreamSource.redacted_url`.

Exceptions::

    Exception
    └── StreamError            (a connection ended; the reader reconnects)
        ├── StreamEndedError   (the stream reached its end)
        ├── StreamStalledError (packets arrive but no picture decodes)
        └── NotVideoError      (the source is no camera video: a text file, a still image)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from monitor.config import CameraConfig, MonitorConfig
from monitor.ingest.urls import with_credentials
from monitor.redaction import REDACTED

Backend = Literal["pyav", "opencv"]
RtspClient = Literal["builtin", "ffmpeg"]
DecodeMode = Literal["auto", "keyframes", "all"]
DecodeChoice = Literal["keyframes", "all"]
StreamState = Literal["connecting", "online", "offline", "unauthorized", "stopped"]

NOT_VIDEO = "not a video stream"
"""How the status and the log say that a source is no camera video (:class:`NotVideoError`)."""


@dataclass(frozen=True, slots=True)
class StreamSource:
    """How to open one camera's stream.

    Credentials written into ``url`` (``rtsp://user:password@host/...``) are taken out of it
    when the source is made, unless ``username`` is given (then they are dropped, as the
    configuration's own ones win): ``url`` never holds a password.
    """

    camera_id: str
    url: str
    """Without user information (see :meth:`opening_url`)."""
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = False
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    """Read timeout until the stream's frame rate is known (then the stall timeout)."""
    backend: Backend = "pyav"
    decode: DecodeMode = "auto"
    interval_s: float = 2.0
    """The camera's sampling interval (``decode = "auto"`` compares the GOP with it)."""
    rtsp_client: RtspClient = "builtin"
    """pyav backend, ``rtsp://`` over TCP: the lean built-in receiver
    (:mod:`monitor.ingest.rtsp`) or FFmpeg's demuxer. The built-in one hands over to FFmpeg by
    itself for streams it does not handle (not H.264 or H.265, redirects ...)."""
    username: str | None = None
    password: SecretStr | None = None

    def __post_init__(self) -> None:
        url, username, password = _split_userinfo(self.url)
        if url == self.url:
            return
        object.__setattr__(self, "url", url)
        if self.username is None and username is not None:
            object.__setattr__(self, "username", username)
            object.__setattr__(self, "password",
                               SecretStr(password) if password is not None else None)

    @property
    def password_text(self) -> str | None:
        """The password in plain text, for the opening call and the redactor only."""
        return self.password.get_secret_value() if self.password is not None else None

    def opening_url(self) -> str:
        """The URL with the credentials percent-encoded into it: for the call that opens
        the stream (FFmpeg, OpenCV), never for a text."""
        return with_credentials(self.url, self.username, self.password_text)

    @property
    def redacted_url(self) -> str:
        """The URL as statuses and logs show it: the user name kept, the password ``***``."""
        if not self.username:
            return self.url
        userinfo = quote(self.username, safe="")
        if self.password is not None:
            userinfo += f":{REDACTED}"
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    @property
    def is_device(self) -> bool:
        """Whether the source is a V4L2 device (``/dev/video0`` or ``v4l2:///dev/video0``)."""
        return self.url.startswith(("/dev/", "v4l2://"))

    @property
    def is_file(self) -> bool:
        """Whether the source is a local file (paced to real time, optionally looped)."""
        return ("://" not in self.url or self.url.startswith("file://")) and not self.is_device


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without user information, and its user name and password (decoded)."""
    if "://" not in url or "@" not in url:
        return url, None, None
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None, None
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    return (urlunsplit(parts._replace(netloc=host)), unquote(username),
            unquote(password) if colon else None)


def stream_source(config: MonitorConfig, camera: CameraConfig) -> StreamSource:
    """How to open ``camera``'s stream (its credentials typed, apart from the URL)."""
    defaults = config.defaults
    return StreamSource(
        camera_id=camera.id,
        url=camera.url,
        username=camera.username,
        password=camera.password if camera.username else None,
        transport=camera.transport, loop=camera.loop,
        open_timeout_s=defaults.open_timeout_s,
        read_timeout_s=defaults.read_timeout_s,
        backend=camera.backend or defaults.backend,
        rtsp_client=camera.rtsp_client or defaults.rtsp_client,
        decode=camera.decode or defaults.decode,
        interval_s=config.camera_interval_s(camera),
    )


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """What is known about a camera's stream; published when it changes."""

    camera_id: str
    url: str
    """Redacted: never holds a password."""
    state: StreamState = "connecting"
    online: bool = False
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    fps: float | None = None
    """Measured from the packets' timestamps (not the stream's declared rate)."""
    gop_frames: int | None = None
    gop_s: float | None = None
    decode: DecodeChoice | None = None
    stall_timeout_s: float | None = None
    backend: Backend = "pyav"
    last_error: str | None = None
    reconnects: int = 0
    frames_read: int = 0
    frames_dropped: int = 0

    @property
    def not_video(self) -> bool:
        """Whether the last connection was refused as not camera video (see
        :func:`~monitor.ingest.decode.video_refusal`): retrying will not help until the
        configuration changes."""
        return self.last_error is not None and self.last_error.startswith(NOT_VIDEO)

    def signature(self) -> tuple[object, ...]:
        """The fields whose change is worth publishing (not the per-frame counters)."""
        return (self.state, self.online, self.width, self.height, self.codec,
                round(self.fps, 1) if self.fps else None, self.gop_frames,
                round(self.gop_s, 2) if self.gop_s else None, self.decode, self.last_error,
                self.reconnects)


class StreamError(Exception):
    """A connection ended and will be reopened."""


class StreamEndedError(StreamError):
    """The stream reached its end (a live camera should never do that)."""


class StreamStalledError(StreamError):
    """Packets keep arriving but no picture has decoded for too long."""


class NotVideoError(StreamError):
    """The source opens but is not camera video: a misconfiguration, not an outage (it is
    retried with the usual backoff all the same, in case the file or URL gets fixed)."""
