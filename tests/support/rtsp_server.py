"""A real RTSP server for tests and benchmarks: serves H.264 MP4 files, looping forever.

Run it with Debian's ``/usr/bin/python3``, not the project's virtualenv: GStreamer's
gst-rtsp-server Python bindings (``gir1.2-gst-rtsp-server-1.0`` + ``python3-gi``) live only in
the system interpreter, so this script imports nothing but the standard library and ``gi``.
``tests/support/rtsp.py`` starts it as a subprocess.

Usage::

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 \\
        --mount cam1=/path/cam1.mp4 --mount cam2=/path/cam2.mp4 [--shared] \\
        [--user U --password PW] [--tls-cert CERT_AND_KEY.pem]

Each mount sends its file's H.264 without re-encoding. Once it listens on 127.0.0.1 it prints
``READY rtsp://127.0.0.1:PORT`` on stdout (``rtsps://`` with ``--tls-cert``: RTSP over TLS, the
RTP data interleaved in the TLS connection); SIGTERM or SIGINT stop it cleanly (exit code 0).

How the file loops (``docs/rtsp-lab.md`` in the shared docs has the measurements behind it):

* A demuxer told to play a *segment* (a seek with the SEGMENT flag) posts SEGMENT_DONE instead
  of sending EOS at the end; answering each SEGMENT_DONE with another non-flushing SEGMENT seek
  back to 0 plays the file again, for ever.
* The first such seek is made once the media is prepared, from a short-lived thread: the
  demuxer's seek waits for its streaming thread, which is parked in preroll until the client's
  PLAY, so seeking from the "prepared" handler itself deadlocked the media. A *flushing* first
  seek instead raced with PLAY and aborted the whole server (``gst_rtsp_media_get_rates``
  assertion). What was prerolled goes out before that seek lands, so a reader sees the first
  frame twice (40 ms apart) at the very start (more frames only if the seek thread is slow to
  run, on a very busy machine).
* Non-flushing seeks carry running time on from where the previous segment stopped, but from
  the start of its last frame, not its end; a pad probe moves each new segment on by that one
  frame so RTP timestamps strictly increase across loop boundaries.
* The media is made non-seekable for clients (see :func:`_make_factory`), so a client's PLAY
  ``Range`` never replaces the looping segment with an ordinary one that would end in EOS.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

import gi  # type: ignore[import-not-found]  # system python3-gi, absent from the venv

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import (  # type: ignore[import-not-found]  # noqa: E402
    Gio,
    GLib,
    Gst,
    GstRtsp,
    GstRtspServer,
)

LOG = logging.getLogger("rtsp_server")

DEMUX_NAME = "demux"
"""Name given to the demuxer in every launch line, so the media can find it to seek."""

PARSE_NAME = "parse"
"""Name given to the H.264/H.265 parser, whose sink pad carries the timestamp fix-up probe."""

EXIT_CANNOT_LISTEN = 3
"""Exit code when the port cannot be bound, so a caller that picked the port can try another."""

LAUNCH_TEMPLATE = (
    # Sends the file's H.264 or H.265 as is (no decoding, no re-encoding). config-interval=-1
    # on parser and payloader: parameter sets go out in-band with every keyframe, so a reader
    # joining mid-stream (shared media) can start decoding at the next keyframe.
    f"( filesrc location={{location}} ! qtdemux name={DEMUX_NAME} "
    f"! {{codec}}parse name={PARSE_NAME} config-interval=-1 "
    "! rtp{codec}pay name=pay0 pt=96 config-interval=-1 )"
)


def _codec_of(path: Path) -> str:
    """``h264`` or ``h265``, from the MP4's sample entry (``avc1``; ``hvc1``/``hev1``), which
    sits in the ``moov`` box at the front of the project's ``+faststart`` files."""
    with path.open("rb") as file:
        head = file.read(1 << 20)
    return "h265" if b"hvc1" in head or b"hev1" in head else "h264"


def _launch_quote(path: Path) -> str:
    """Quote a file path for a gst-launch line (spaces and quotes in test paths are legal)."""
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _segment_seek(demux: Gst.Element) -> bool:
    """Ask ``demux`` to play the whole file again as one segment, without flushing.

    Non-flushing keeps already-queued data and makes the new segment's base (its running-time
    origin) the point the previous one reached, so time goes on across the loop boundary; SEGMENT
    makes the demuxer post SEGMENT_DONE at the end instead of sending EOS, the cue for the next
    loop.
    """
    ok: bool = demux.seek(
        1.0,
        Gst.Format.TIME,
        Gst.SeekFlags.SEGMENT,
        Gst.SeekType.SET,
        0,
        Gst.SeekType.NONE,
        -1,
    )
    return ok


def _define_looping_media() -> type[GstRtspServer.RTSPMedia]:
    """Register and return the RTSPMedia subclass that loops its file.

    It must be defined after ``Gst.init()``: registering a subclass initialises the
    GstRTSPMedia class, whose signals take GstMessage and friends, and those GTypes only exist
    once GStreamer is initialised (otherwise the ``handle-message`` signal is created broken and
    the vfunc never runs).
    """

    class LoopingMedia(GstRtspServer.RTSPMedia):  # type: ignore[misc]  # gi classes are untyped
        """An RTSP media that restarts its file at each SEGMENT_DONE instead of ending."""

        __gtype_name__ = "MonitorTestLoopingMedia"

        def do_handle_message(self, message: Gst.Message) -> bool:
            """Answer SEGMENT_DONE with the next segment seek; leave the rest to the base class.

            The base class owns the pipeline's bus watch and relies on its handler for state
            changes, errors and EOS, so it is always chained to.
            """
            if message.type == Gst.MessageType.SEGMENT_DONE:
                demux = self.get_element().get_by_name(DEMUX_NAME)
                if demux is None or not _segment_seek(demux):
                    LOG.warning("loop seek failed on SEGMENT_DONE")
            handled: bool = GstRtspServer.RTSPMedia.do_handle_message(self, message)
            return handled

    return LoopingMedia


def _on_media_prepared(media: GstRtspServer.RTSPMedia) -> None:
    """Start the first (non-flushing) segment seek once the pipeline has prerolled.

    The seek runs in its own thread because it blocks until the demuxer's streaming thread,
    parked in preroll, is released by the client's PLAY; this handler runs on the media's
    thread, which must stay free to answer that PLAY. If the client leaves without playing, the
    pipeline's shutdown releases the seek, which then does nothing.
    """
    demux = media.get_element().get_by_name(DEMUX_NAME)
    if demux is None:
        LOG.warning("no demuxer named %r in the media", DEMUX_NAME)
        return

    def first_seek() -> None:
        if not _segment_seek(demux):
            LOG.warning("first loop seek failed")

    # Daemon: a client that never plays must not keep the server from exiting.
    threading.Thread(target=first_seek, name="first-seek", daemon=True).start()


class _MonotonicSegments:
    """Pad probe that keeps running time strictly increasing across loop boundaries.

    A non-flushing seek bases the new segment on the demuxer's *position*, which is the start
    time of the last frame it sent, not its end: left alone, the first frame of each loop gets
    the same running time (so the same RTP timestamp) as the last frame of the previous one,
    which clients see as a duplicate timestamp. This probe remembers where the last buffer ended
    in running time and re-sends any SEGMENT event that would start before that, with its base
    moved forward just enough.
    """

    def __init__(self) -> None:
        self._segment: Gst.Segment | None = None
        self._end_running_time = 0

    def __call__(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """Track buffer ends; shift segments that would go back in time."""
        if info.type & Gst.PadProbeType.BUFFER:
            self._on_buffer(info.get_buffer())
            return Gst.PadProbeReturn.OK
        event = info.get_event()
        if event is None or event.type != Gst.EventType.SEGMENT:
            return Gst.PadProbeReturn.OK
        segment = event.parse_segment()
        start_running_time = segment.to_running_time(Gst.Format.TIME, segment.start)
        if self._segment is None or start_running_time >= self._end_running_time:
            self._segment = segment.copy()
            return Gst.PadProbeReturn.OK
        shifted = segment.copy()
        shifted.base += self._end_running_time - start_running_time
        replacement = Gst.Event.new_segment(shifted)
        replacement.set_seqnum(event.get_seqnum())
        # The replacement passes through this probe again and is kept as is, since it no longer
        # starts in the past; the original is dropped so only one SEGMENT reaches the parser.
        pad.send_event(replacement)
        return Gst.PadProbeReturn.DROP

    def _on_buffer(self, buffer: Gst.Buffer) -> None:
        if self._segment is None or buffer.pts == Gst.CLOCK_TIME_NONE:
            return
        end = buffer.pts
        if buffer.duration != Gst.CLOCK_TIME_NONE:
            end += buffer.duration
        running_time: int = self._segment.to_running_time(Gst.Format.TIME, end)
        if running_time != Gst.CLOCK_TIME_NONE:
            self._end_running_time = max(self._end_running_time, running_time)


def _on_media_configure(
    _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
) -> None:
    """Hook each new media up: timestamp fix-up probe, first segment seek once prepared."""
    parse = media.get_element().get_by_name(PARSE_NAME)
    parse.get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, _MonotonicSegments()
    )
    media.connect("prepared", _on_media_prepared)


def _make_factory(
    path: Path,
    *,
    media_type: type[GstRtspServer.RTSPMedia],
    shared: bool,
    permissions: GstRtspServer.RTSPPermissions | None,
) -> GstRtspServer.RTSPMediaFactory:
    """Build the factory for one mount: file -> H.264 RTP, looping, optionally shared."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH_TEMPLATE.format(location=_launch_quote(path),
                                              codec=_codec_of(path)))
    factory.set_media_gtype(media_type.__gtype__)
    # Not shared by default: each client gets its own pipeline and so starts at the file's
    # beginning (deterministic tests). Shared: one pipeline per mount for all its readers,
    # which is what a real camera looks like and what benchmarks with many readers want.
    factory.set_shared(shared)
    # Make the media refuse client seeks, as a camera does. Clients such as FFmpeg send
    # "Range: npt=0.000-" with every PLAY, and gst-rtsp-server answers a range away from the
    # current position with a *flushing* seek of the pipeline: on shared media that rewinds every
    # other reader, and in any case it replaces our SEGMENT seek, so the file then ends with EOS
    # instead of looping (measured: a second reader joining a shared mount ended the stream for
    # both at the next file end). gst-rtsp-server treats media whose streams publish RFC 7273
    # clock-and-offset information as not seekable and then ignores PLAY ranges.
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    factory.connect("media-configure", _on_media_configure)
    if permissions is not None:
        factory.set_permissions(permissions)
    return factory


def _make_auth(
    user: str, password: str, method: str = "basic"
) -> tuple[GstRtspServer.RTSPAuth, GstRtspServer.RTSPPermissions]:
    """Basic or Digest auth for one user; clients without those credentials get 401."""
    role = "user"
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    if method == "digest":
        # Digest only, as most IP cameras do: the password never crosses the wire.
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    return auth, _role_permissions(role)


def _anonymous_auth() -> tuple[GstRtspServer.RTSPAuth, GstRtspServer.RTSPPermissions]:
    """An auth object that lets every client in (a TLS certificate needs an auth object).

    Once a server has an auth object, a client without a token may do nothing: the default
    token gives every client a role, and the permissions let that role use the mounts.
    """
    role = "anonymous"
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    auth.set_default_token(token)
    return auth, _role_permissions(role)


def _role_permissions(role: str) -> GstRtspServer.RTSPPermissions:
    """Permissions for ``role`` to play every mount."""
    permissions = GstRtspServer.RTSPPermissions()
    # Both are needed: "access" lets the client see the mount, "construct" lets it create the
    # media (start a pipeline); clients without the role get neither and are answered 401.
    for permission in (
        GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
        GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
    ):
        permissions.add_permission_for_role(role, permission, allowed=True)
    return permissions


def _tls_certificate(path: Path) -> Gio.TlsCertificate:
    """The certificate and its private key from one PEM file; exits if GLib has no TLS."""
    backend = Gio.TlsBackend.get_default()
    if not backend.supports_tls():
        raise SystemExit("GLib has no TLS backend: install glib-networking")
    try:
        return Gio.TlsCertificate.new_from_file(str(path))
    except GLib.Error as exc:
        raise SystemExit(f"cannot load the TLS certificate and key from {path}: "
                         f"{exc.message}") from exc


def _parse_mount(text: str) -> tuple[str, Path]:
    """Parse ``NAME=PATH.mp4`` into a mount name and an existing file."""
    name, sep, path_text = text.partition("=")
    name = name.strip("/")
    if not sep or not name or not path_text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH.mp4, got {text!r}")
    path = Path(path_text).resolve()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"mount {name!r}: no such file {path}")
    return name, path


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse and cross-check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--mount",
        type=_parse_mount,
        action="append",
        required=True,
        metavar="NAME=PATH.mp4",
        help="serve PATH.mp4 (H.264) at rtsp://127.0.0.1:PORT/NAME; repeatable",
    )
    parser.add_argument(
        "--shared", action="store_true", help="one pipeline per mount shared by all its readers"
    )
    parser.add_argument("--user", help="require basic auth with this user name")
    parser.add_argument("--password", help="the password for --user")
    parser.add_argument("--auth", choices=("basic", "digest"), default="basic",
                        help="authentication scheme for --user (default basic)")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="serve RTSP over TLS (rtsps://) with the certificate and private "
                             "key in this PEM file")
    args = parser.parse_args(argv)
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    names = [name for name, _ in args.mount]
    if len(set(names)) != len(names):
        parser.error(f"duplicate mount names in {names}")
    if args.tls_cert is not None and not args.tls_cert.is_file():
        parser.error(f"--tls-cert: no such file {args.tls_cert}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve the mounts until SIGTERM or SIGINT; return the process exit code."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="rtsp_server: %(levelname)s %(message)s")
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    auth = permissions = None
    if args.user is not None:
        auth, permissions = _make_auth(args.user, args.password, args.auth)
    if args.tls_cert is not None:
        if auth is None:
            auth, permissions = _anonymous_auth()
        # Every connection to the server's port is then TLS (there is no STARTTLS in RTSP).
        auth.set_tls_certificate(_tls_certificate(args.tls_cert))
    if auth is not None:
        server.set_auth(auth)
    media_type = _define_looping_media()
    mounts = server.get_mount_points()
    for name, path in args.mount:
        factory = _make_factory(
            path, media_type=media_type, shared=args.shared, permissions=permissions
        )
        mounts.add_factory(f"/{name}", factory)

    loop = GLib.MainLoop()

    def _stop(signum: int) -> bool:
        LOG.info("signal %d: stopping", signum)
        loop.quit()
        return False  # GLib.SOURCE_REMOVE: one signal is enough

    # GLib's unix signal sources run the handler inside the main loop; a Python signal handler
    # would only run when the interpreter regains control, which a blocked loop.run() delays.
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _stop, signum)

    # attach() binds and listens synchronously; it returns 0 when the port cannot be bound.
    if server.attach(None) == 0:
        LOG.error("cannot listen on 127.0.0.1:%d", args.port)
        return EXIT_CANNOT_LISTEN
    scheme = "rtsps" if args.tls_cert is not None else "rtsp"
    sys.stdout.write(f"READY {scheme}://127.0.0.1:{args.port}\n")
    sys.stdout.flush()

    loop.run()

    # Close every client (and so its session and pipeline) in order, rather than leaving the
    # streaming threads to be cut off by interpreter exit.
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
