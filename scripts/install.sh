#!/usr/bin/env bash
# Installs monitor on a Debian/Ubuntu GPU server, or uninstalls it (config and state kept).
#
# Usage: scripts/install.sh [--root DIR] [--dry-run] [--skip-venv] [--with-vllm] [--uninstall]
#   --root DIR    install under DIR instead of / (also: DESTDIR=DIR); users, ownership and
#                 systemd's running state are left alone there, units are enabled offline
#   --dry-run     print every step, change nothing
#   --skip-venv   do not create /opt/monitor's virtualenv (tests; a venv built elsewhere)
#   --with-vllm   also create vLLM's own virtualenv /opt/vllm and pip install vllm
#                 (with --uninstall: also remove /opt/vllm)
#   --uninstall   disable and remove the units and /opt/monitor; keep /etc/monitor,
#                 /var/lib/monitor, /var/lib/vllm (models) and the users
# PYTHON=python3.12 picks the interpreter of the virtualenvs (default python3, >= 3.11).
#
# What goes where:
#   /opt/monitor               the daemon's virtualenv (pip install of this checkout)
#   /opt/monitor/libexec/      vllm-serve (builds vLLM's command line from vllm.env)
#   /opt/monitor/share/        README.md, monitor.example.toml, vllm.env.example
#   /etc/monitor/monitor.toml  from config/monitor.example.toml, never overwritten
#   /etc/monitor/vllm.env      from config/vllm.env.example, never overwritten
#   /etc/monitor/credentials/  mqtt/, vlm/, camera/: secrets for LoadCredential= (root, 0700)
#   /var/lib/monitor           state (outbox, snapshots) of user monitor
#   /var/lib/vllm              state of user vllm; models in /var/lib/vllm/models
#   /etc/systemd/system/       monitor.service, vllm-qwen2.5-vl.service (replaced on update;
#                              local changes belong in drop-ins: systemctl edit UNIT)
# Running it again updates the daemon and the units and keeps every configuration file.
set -euo pipefail

readonly UNITS=(monitor.service vllm-qwen2.5-vl.service)
readonly PREFIX=/opt/monitor
readonly VLLM_VENV=/opt/vllm
prog=${0##*/}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

root=${DESTDIR:-/}
dry_run=0
skip_venv=0
with_vllm=0
action=install
while [ $# -gt 0 ]; do
  case $1 in
    --root)
      [ $# -ge 2 ] || { echo "$prog: --root needs a directory" >&2; exit 64; }
      root=$2
      shift 2
      ;;
    --root=*) root=${1#--root=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --skip-venv) skip_venv=1; shift ;;
    --with-vllm) with_vllm=1; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "$prog: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ -n "$root" ] || root=/
case $root in /*) ;; *) root=$PWD/$root ;; esac
root=${root%/}
# $root is "" for the real system, so "$root/etc" is "/etc".

# Users, ownership and the running systemd are touched only when installing for real, as root.
privileged=0
skip_reason=""
if [ -n "$root" ]; then
  skip_reason="installing under --root $root"
elif [ "$(id -u)" -ne 0 ]; then
  skip_reason="not root"
else
  privileged=1
fi
# sd_booted(3): systemd is PID 1 when this directory exists.
systemd_running=0
if [ -d /run/systemd/system ]; then systemd_running=1; fi

say() { echo "$prog: $*"; }

# Reports a change: "installed: X", or "would install: X" under --dry-run.
did() { # PAST FUTURE WHAT...
  local past=$1 future=$2
  shift 2
  if [ "$dry_run" = 1 ]; then say "would $future: $*"; else say "$past: $*"; fi
}

quote_command() {
  local arg out=""
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $arg"; else out+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}

# Runs a command, or only prints it under --dry-run.
run() {
  if [ "$dry_run" = 1 ]; then
    echo "+ $(quote_command "$@")"
  else
    "$@"
  fi
}

# A step that needs root on the real system; reported and skipped otherwise.
run_privileged() {
  if [ "$privileged" = 1 ]; then
    run "$@"
  else
    say "skipped ($skip_reason): $(quote_command "$@")"
  fi
}

# install_dir PATH MODE [OWNER:GROUP]
install_dir() {
  run install -d -m "$2" "$root$1"
  if [ $# -ge 3 ]; then run_privileged chown "$3" "$root$1"; fi
}

# install_file SRC DEST MODE: copy, replacing what is there.
install_file() {
  if [ -f "$root$2" ] && cmp -s "$1" "$root$2"; then
    say "unchanged: $2"
    return
  fi
  run install -m "$3" "$1" "$root$2"
  did installed install "$2"
}

# install_config SRC DEST MODE OWNER:GROUP: copy only when DEST does not exist yet.
install_config() {
  if [ -e "$root$2" ]; then
    say "kept existing $2 (compare with $PREFIX/share/${1##*/})"
    return
  fi
  run install -m "$3" "$1" "$root$2"
  run_privileged chown "$4" "$root$2"
  did installed install "$2 (edit it)"
}

create_user() { # NAME HOME
  if [ "$privileged" = 1 ] && getent passwd "$1" >/dev/null; then
    say "user $1 exists"
    return
  fi
  run_privileged useradd --system --user-group --home-dir "$2" --no-create-home \
    --shell /usr/sbin/nologin --comment "$3" "$1"
  if [ "$privileged" = 1 ]; then did "created user" "create user" "$1"; fi
}

# systemctl: live on a booted system, offline (--root) for a tree, skipped otherwise.
systemctl_step() { # enable|disable
  if [ -n "$root" ]; then
    if command -v systemctl >/dev/null 2>&1; then
      run systemctl --root="$root" --quiet "$1" "${UNITS[@]}"
    else
      say "skipped (no systemctl here): systemctl --root=$root $1 ${UNITS[*]}"
    fi
  elif [ "$systemd_running" = 0 ]; then
    say "skipped (systemd is not running as PID 1): systemctl daemon-reload;" \
      "systemctl $1 ${UNITS[*]}; run them once it is"
  else
    run_privileged systemctl daemon-reload
    if [ "$1" = disable ]; then
      run_privileged systemctl disable --now "${UNITS[@]}"
    else
      run_privileged systemctl enable "${UNITS[@]}"
    fi
  fi
}

check_python() {
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || {
    echo "$prog: $python not found: apt-get install python3 python3-venv" >&2
    exit 69
  }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "$prog: $python is older than 3.11, which monitor needs" >&2
    exit 69
  }
  "$python" -c 'import ensurepip, venv' 2>/dev/null || {
    echo "$prog: $python cannot create virtualenvs: apt-get install python3-venv" >&2
    exit 69
  }
}

do_install() {
  say "installing monitor from $src into ${root:-/}"
  if [ "$skip_venv" = 0 ] || [ "$with_vllm" = 1 ]; then check_python; fi

  create_user monitor /var/lib/monitor "camera safety monitor"
  create_user vllm /var/lib/vllm "vLLM model server for monitor"
  if [ "$privileged" = 1 ]; then
    # Some distributions give /dev/nvidia* to these groups instead of mode 0666.
    for group in video render; do
      if getent group "$group" >/dev/null; then run usermod -a -G "$group" vllm; fi
    done
  fi

  install_dir "$PREFIX" 0755
  if [ "$skip_venv" = 1 ]; then
    say "skipped (--skip-venv): virtualenv $PREFIX with pip install $src"
  else
    run "${PYTHON:-python3}" -m venv "$root$PREFIX"
    run "$root$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check \
      --upgrade "$src"
  fi
  install_dir "$PREFIX/libexec" 0755
  install_dir "$PREFIX/share" 0755
  install_file "$src/scripts/vllm-serve" "$PREFIX/libexec/vllm-serve" 0755
  install_file "$src/README.md" "$PREFIX/share/README.md" 0644
  install_file "$src/config/monitor.example.toml" "$PREFIX/share/monitor.example.toml" 0644
  install_file "$src/config/vllm.env.example" "$PREFIX/share/vllm.env.example" 0644

  # /etc/monitor stays root's; each service reads only its own file.
  install_dir /etc/monitor 0755
  install_config "$src/config/monitor.example.toml" /etc/monitor/monitor.toml 0640 root:monitor
  install_config "$src/config/vllm.env.example" /etc/monitor/vllm.env 0640 root:vllm
  install_dir /etc/monitor/credentials 0700
  for kind in mqtt vlm camera; do install_dir "/etc/monitor/credentials/$kind" 0700; done

  install_dir /var/lib/monitor 0750 monitor:monitor
  install_dir /var/lib/vllm 0750 vllm:vllm
  install_dir /var/lib/vllm/models 0755

  install_dir /etc/systemd/system 0755
  for unit in "${UNITS[@]}"; do
    install_file "$src/systemd/$unit" "/etc/systemd/system/$unit" 0644
  done
  systemctl_step enable

  if [ "$with_vllm" = 1 ]; then
    run "${PYTHON:-python3}" -m venv "$root$VLLM_VENV"
    run "$root$VLLM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      --upgrade vllm
  elif [ ! -x "$root$VLLM_VENV/bin/python" ]; then
    say "note: no vLLM at $VLLM_VENV (SERVE_PYTHON in /etc/monitor/vllm.env); install it with"
    say "      python3 -m venv $VLLM_VENV && $VLLM_VENV/bin/pip install vllm  (or --with-vllm)"
  fi

  cat <<EOF
$prog: done. Next:
  1. edit /etc/monitor/monitor.toml (cameras, broker) and /etc/monitor/vllm.env (model, GPUs);
     secrets go in /etc/monitor/credentials/{mqtt/password,vlm/api_key,camera/<id>_password}
  2. $PREFIX/bin/pip install modelscope && $PREFIX/bin/monitor download-model
  3. systemctl start vllm-qwen2.5-vl monitor; journalctl -u monitor -f
EOF
}

do_uninstall() {
  say "uninstalling monitor from ${root:-/} (configuration and state are kept)"
  if [ "$root" ] || [ "$systemd_running" = 1 ]; then systemctl_step disable; else
    say "skipped (systemd is not running as PID 1): systemctl disable --now ${UNITS[*]}"
  fi
  for unit in "${UNITS[@]}"; do
    if [ -e "$root/etc/systemd/system/$unit" ]; then
      run rm -f "$root/etc/systemd/system/$unit"
      did removed remove "/etc/systemd/system/$unit"
    fi
  done
  if [ -z "$root" ] && [ "$systemd_running" = 1 ]; then run_privileged systemctl daemon-reload; fi
  if [ -e "$root$PREFIX" ]; then
    run rm -rf "$root$PREFIX"
    did removed remove "$PREFIX"
  fi
  if [ "$with_vllm" = 1 ] && [ -e "$root$VLLM_VENV" ]; then
    run rm -rf "$root$VLLM_VENV"
    did removed remove "$VLLM_VENV"
  fi
  say "kept: /etc/monitor (configuration, credentials), /var/lib/monitor (state)," \
    "/var/lib/vllm (models), the users monitor and vllm"
}

if [ "$dry_run" = 1 ]; then
  say "dry run: nothing is changed"
elif [ -z "$root" ] && [ "$privileged" = 0 ]; then
  echo "$prog: installing into / needs root: run it with sudo, or use --root DIR or --dry-run" >&2
  exit 77
fi
"do_$action"
