#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages `make demo` or `make test` needs, when they are missing.
# Usage: scripts/system-deps.sh demo|test
# As root it runs apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail

mode="${1:?usage: $0 demo|test}"
missing=()

has_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

# `python3 -m venv` needs ensurepip, which Debian ships separately (python3-venv).
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
has_cmd mosquitto || missing+=(mosquitto)
# The demo prints a `mosquitto_sub` command to watch the topics yourself.
has_cmd mosquitto_sub || missing+=(mosquitto-clients)

if [ "$mode" = "test" ]; then
  has_cmd ffmpeg || missing+=(ffmpeg)
  has_cmd mosquitto_passwd || missing+=(mosquitto)
  # The unit tests run `systemd-analyze verify` and `security --offline=yes` on systemd/;
  # installing the package does not make systemd PID 1.
  has_cmd systemd-analyze || missing+=(systemd)
  # The operator console's browser tests drive Debian's chromium through its chromedriver.
  has_cmd chromium || missing+=(chromium)
  has_cmd chromedriver || missing+=(chromium-driver)
  # The RTSP test server is GStreamer's gst-rtsp-server, driven from Debian's own python3
  # through GObject introspection (its bindings are not on PyPI).
  if ! /usr/bin/python3 - >/dev/null 2>&1 <<'PY'
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
for element in ("qtdemux", "h264parse", "rtph264pay", "avdec_h264"):
    assert Gst.ElementFactory.find(element), element
PY
  then
    missing+=(python3 python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
              gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
              gstreamer1.0-libav)
  fi
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# De-duplicate while keeping order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')

if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages for 'make $mode': ${missing[*]}" >&2
  echo "       install them with:" >&2
  echo "       sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing packages (${missing[*]}) and no apt-get on this machine;" \
       "install their equivalents with your package manager" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
