"""A real RTSP server for tests and benchmarks, driven from the project's virtualenv.

:class:`RtspServer` runs ``tests/support/rtsp_server.py`` (GStreamer's gst-rtsp-server, serving
H.264 MP4 files in an endless loop) as a child process of Debian's ``/usr/bin/python3``: the
server's Python bindings exist only in that interpreter, not in the virtualenv.

::

    available, reason = rtsp_server_available()
    if not available:
        pytest.skip(reason)
    with RtspServer({"gate": clip_path}, user="viewer", password="pw") as server:
        url = server.url("gate")  # rtsp://127.0.0.1:PORT/gate
    with RtspServer({"gate": clip_path}, tls_cert=pem_with_cert_and_key) as server:
        url = server.url("gate")  # rtsps://127.0.0.1:PORT/gate (needs rtsps_available())

Exceptions::

    RuntimeError
    └── RtspServerError
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self
from urllib.parse import quote

SYSTEM_PYTHON = Path("/usr/bin/python3")
"""Debian's interpreter, the one with python3-gi and the gst-rtsp-server bindings."""

SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")

HOST = "127.0.0.1"

READY_TIMEOUT_S = 15.0
"""How long the server may take to print its READY line (GStreamer's first start can be slow)."""

STOP_TIMEOUT_S = 5.0
"""How long the server has to exit after SIGTERM before it is killed."""

_EXIT_CANNOT_LISTEN = 3
"""``rtsp_server.py``'s exit code when its port is taken (kept in step with that script)."""

_PORT_ATTEMPTS = 3
"""Free ports tried: another process can take the one we picked before the server binds it."""

_STDERR_TAIL_CHARS = 3000

# The interpreter's isolated mode (-I) ignores PYTHON* variables and the user's site-packages,
# so a virtualenv's PYTHONPATH or PYTHONHOME in the test environment cannot leak into the
# system interpreter and shadow its gi bindings.
_PYTHON_ARGS = (str(SYSTEM_PYTHON), "-I")

_AVAILABILITY_CHECK = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [name for name in ("filesrc", "qtdemux", "h264parse", "rtph264pay")
           if Gst.ElementFactory.find(name) is None]
if missing:
    raise SystemExit("GStreamer elements missing: " + ", ".join(missing))
"""


_TLS_CHECK = """
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio
if not Gio.TlsBackend.get_default().supports_tls():
    raise SystemExit("GLib has no TLS backend")
"""


class RtspServerError(RuntimeError):
    """The RTSP test server could not be started (the message carries its stderr)."""


@functools.cache
def rtsp_server_available() -> tuple[bool, str]:
    """Whether the RTSP test server can run here, and if not, why (a pytest skip reason).

    Checks that ``/usr/bin/python3`` has the gst-rtsp-server bindings and that the GStreamer
    elements the server's pipeline uses are installed. The answer is cached per process.
    """
    if not SYSTEM_PYTHON.is_file():
        return False, f"{SYSTEM_PYTHON} not found (the RTSP test server needs Debian's python3)"
    try:
        result = subprocess.run(
            [*_PYTHON_ARGS, "-c", _AVAILABILITY_CHECK],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {SYSTEM_PYTHON}: {exc}"
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        return False, (
            f"GStreamer RTSP server unavailable in {SYSTEM_PYTHON} ({detail}); install "
            "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
        )
    return True, ""


@functools.cache
def rtsps_available() -> tuple[bool, str]:
    """Whether the RTSP test server can serve RTSP over TLS here, and if not, why.

    Needs the server itself (:func:`rtsp_server_available`) and a GLib TLS backend
    (glib-networking) in ``/usr/bin/python3``'s GLib. Cached per process.
    """
    available, reason = rtsp_server_available()
    if not available:
        return available, reason
    try:
        result = subprocess.run([*_PYTHON_ARGS, "-c", _TLS_CHECK], capture_output=True,
                                text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {SYSTEM_PYTHON}: {exc}"
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        return False, f"no TLS for the RTSP test server ({detail}); install glib-networking"
    return True, ""


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class RtspServer:
    """``with RtspServer({"cam": path}) as server:`` serves ``path`` at ``server.url("cam")``.

    Each mount serves an H.264 MP4 file without re-encoding, looping forever with strictly
    increasing timestamps. By default every reader gets its own pipeline and so sees the file
    from its first frame; ``shared=True`` gives one pipeline per mount for all its readers, as
    a real camera behaves (readers join mid-stream, at the next keyframe). ``user`` and
    ``password`` turn on RTSP authentication for every mount (``auth``: basic or digest).
    ``tls_cert``, a PEM file holding a certificate and its private key, serves RTSP over TLS
    instead: the URLs are then ``rtsps://`` and plain RTSP clients get nowhere.

    The port is picked when the object is made, so :attr:`port` and :meth:`url` work before
    the server starts; should that port be taken by the time the server binds it, another is
    picked, so read them once the server has started if it matters.
    """

    def __init__(
        self,
        mounts: Mapping[str, str | os.PathLike[str]],
        *,
        shared: bool = False,
        user: str | None = None,
        password: str | None = None,
        auth: Literal["basic", "digest"] = "basic",
        tls_cert: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        if not mounts:
            raise ValueError("RtspServer needs at least one mount, e.g. {'cam': 'cam.mp4'}")
        if (user is None) != (password is None):
            raise ValueError("RtspServer: give both user and password, or neither")
        self._mounts = {name.strip("/"): Path(path).resolve() for name, path in mounts.items()}
        for name, path in self._mounts.items():
            if not path.is_file():
                raise ValueError(f"RtspServer mount {name!r}: no such file {path}")
        self._shared = shared
        self._user = user
        self._password = password
        self._auth = auth
        self._tls_cert = Path(tls_cert).resolve() if tls_cert is not None else None
        if self._tls_cert is not None and not self._tls_cert.is_file():
            raise ValueError(f"RtspServer tls_cert: no such file {self._tls_cert}")
        self._ready_timeout_s = ready_timeout_s
        self._port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (127.0.0.1)."""
        return self._port

    @property
    def pid(self) -> int:
        """The server process's id; raises :class:`RtspServerError` if it is not started."""
        if self._process is None:
            raise RtspServerError("RtspServer is not started")
        return self._process.pid

    @property
    def scheme(self) -> str:
        """``rtsps`` when the server was given a TLS certificate, else ``rtsp``."""
        return "rtsps" if self._tls_cert is not None else "rtsp"

    def url(self, mount: str, *, credentials: bool = False) -> str:
        """``rtsp://127.0.0.1:PORT/MOUNT`` (``rtsps://`` with TLS); with ``credentials=True``,
        ``user:password@`` too.

        Credentials are percent-encoded, so passwords with ``:`` or ``@`` survive.
        """
        name = mount.strip("/")
        if name not in self._mounts:
            raise KeyError(f"no mount {name!r}; mounts are {sorted(self._mounts)}")
        userinfo = ""
        if credentials:
            if self._user is None or self._password is None:
                raise ValueError("url(credentials=True) on a server started without user/password")
            userinfo = f"{quote(self._user, safe='')}:{quote(self._password, safe='')}@"
        return f"{self.scheme}://{userinfo}{HOST}:{self._port}/{name}"

    def is_running(self) -> bool:
        """Whether the server process is started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def stderr_tail(self, chars: int = _STDERR_TAIL_CHARS) -> str:
        """The end of what the server wrote to stderr (its log and GStreamer's warnings)."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - chars))
        return self._stderr.read().decode(errors="replace")

    def start(self) -> Self:
        """Start the server and wait for it to listen; raises :class:`RtspServerError`."""
        if self._process is not None:
            raise RtspServerError("RtspServer is already started")
        for attempt in range(_PORT_ATTEMPTS):
            if attempt:
                self._port = _free_port()
            try:
                self._spawn_and_wait_ready()
            except _PortTakenError:
                continue
            return self
        raise RtspServerError(
            f"RTSP test server found {_PORT_ATTEMPTS} free ports taken in a row; "
            f"last stderr:\n{self.stderr_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server, wait up to 5 s, then SIGKILL it. Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self) -> list[str]:
        command = [*_PYTHON_ARGS, str(SERVER_SCRIPT), "--port", str(self._port)]
        for name, path in self._mounts.items():
            command += ["--mount", f"{name}={path}"]
        if self._shared:
            command.append("--shared")
        if self._user is not None and self._password is not None:
            command += ["--user", self._user, "--password", self._password,
                        "--auth", self._auth]
        if self._tls_cert is not None:
            command += ["--tls-cert", str(self._tls_cert)]
        return command

    def _spawn_and_wait_ready(self) -> None:
        """One start attempt on the current port; leaves nothing running if it fails."""
        if self._stderr is not None:
            self._stderr.close()
        # stderr goes to a file, not a pipe: nobody reads it while tests run, and a full pipe
        # would block the server's logging (and with it the server). The file lives as long as
        # the server does and stop() closes it, hence no `with` block.
        self._stderr = tempfile.TemporaryFile(prefix="rtsp-server-", suffix=".log")  # noqa: SIM115
        process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
        )
        try:
            line = _read_line(process, self._ready_timeout_s)
        except BaseException:
            _terminate(process)
            raise
        expected = f"READY {self.scheme}://{HOST}:{self._port}"
        if line == expected:
            self._process = process
            return
        _terminate(process)
        if process.returncode == _EXIT_CANNOT_LISTEN:
            raise _PortTakenError
        if line is None:
            what = f"exited with code {process.returncode} before it was ready"
        elif line == "":
            what = f"was not ready within {self._ready_timeout_s:g} s"
        else:
            what = f"printed {line!r} instead of {expected!r}"
        raise RtspServerError(
            f"RTSP test server {what}; command: {' '.join(self._redacted_command())}\n"
            f"stderr:\n{self.stderr_tail()}"
        )

    def _redacted_command(self) -> list[str]:
        command = self._command()
        if "--password" in command:
            command[command.index("--password") + 1] = "***"
        return command


class _PortTakenError(Exception):
    """The server could not bind its port (someone took it after we picked it)."""


def _read_line(process: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """The first stdout line of ``process``, without its newline.

    Returns ``None`` if the process closed stdout (exited) first and ``""`` on timeout.
    """
    if process.stdout is None:
        raise RtspServerError("the server was started without a stdout pipe")
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ""
            if not selector.select(remaining):
                continue
            # os.read, not the buffered file object: the file object would block until a whole
            # line (or its buffer) is in, defeating the select() timeout.
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode(errors="replace").strip()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait up to :data:`STOP_TIMEOUT_S`, then SIGKILL and reap."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
