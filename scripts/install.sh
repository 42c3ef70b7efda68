#!/usr/bin/env bash
# Installs everything hbaf-edge needs on a Debian/Ubuntu machine (or JetPack), skipping what is already there.
#
# System packages come from apt. Python packages go into a virtual environment, .venv/ in this
# checkout (HBAF_VENV=DIR puts it elsewhere), created with the first python3 on PATH (or $PYTHON):
# Debian 12 and Ubuntu 24.04 refuse `pip install` into the system python (PEP 668). On a Jetson
# the environment also sees the system site-packages, so NVIDIA's torch and JetPack's tensorrt stay
# in use. When that python already is a virtual environment, or HBAF_NO_VENV=1, packages go
# straight into it. Nobody needs to activate anything: scripts/test.sh and scripts/quickstart.sh
# run the environment's python and commands directly.
#
# On a Jetson (JetPack 6.1/6.2: Ubuntu 22.04, Python 3.10, TensorRT 10.3, CUDA 12.6) it also installs
# python3-dev (pycuda builds from source), libopenblas-dev (NVIDIA's torch wheel links it) and JetPack's
# TensorRT bindings (python3-libnvinfer), keeps numpy below 2 (scripts/jetson-constraints.txt: NVIDIA's
# torch wheels are built against numpy 1.x), builds pycuda (the jetson extra), and reuses the torch the
# system has; it never puts PyPI's CPU-only aarch64 torch in its place (docs/JETSON.md says how to install
# NVIDIA's). Where JetPack is looked for can be pointed elsewhere (HBAF_MACHINE, HBAF_TEGRA_RELEASE).
#
#   bash scripts/install.sh                  install; a second run only checks (a second or two)
#   bash scripts/install.sh --print-python   print the python the packages go to; install nothing
#   bash scripts/install.sh --print-plan     print what an install would do here; install nothing
set -euo pipefail
HERE=$PWD
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
PY=${PYTHON:-python3}

print_only=0
plan_only=0
case "${1:-}" in
  --print-python) print_only=1 ;;
  --print-plan) plan_only=1 ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--print-python | --print-plan]" >&2; exit 2 ;;
esac

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; apt-get install python3 (3.10 or newer), or set PYTHON=/path/to/python3" >&2
  exit 2
fi

# Where the packages go: a virtual environment, unless the python is one already or HBAF_NO_VENV=1.
VENV=""
if [ "${HBAF_NO_VENV:-0}" = 1 ] || "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  TARGET=$("$PY" -c 'import sys; print(sys.executable)')
else
  VENV=${HBAF_VENV:-$REPO/.venv}
  case "$VENV" in /*) ;; *) VENV=$HERE/$VENV ;; esac
  TARGET=$VENV/bin/python
fi
if [ "$print_only" = 1 ]; then
  echo "$TARGET"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
jetson=0
MACHINE=${HBAF_MACHINE:-$(uname -m)}
TEGRA_RELEASE=${HBAF_TEGRA_RELEASE:-/etc/nv_tegra_release}
if [ "$MACHINE" = aarch64 ] && [ -f "$TEGRA_RELEASE" ]; then jetson=1; fi
JETSON_CONSTRAINTS=$REPO/scripts/jetson-constraints.txt

# ---------------------------------------------------------------- system packages (one apt step)
need=()
for bin in espeak-ng sox ffmpeg; do command -v "$bin" >/dev/null 2>&1 || need+=("$bin"); done
# Extra speech synthesizer families of MELD-TTS (flite; festival with its English voices).
command -v flite >/dev/null 2>&1 || need+=(flite)
command -v text2wave >/dev/null 2>&1 || need+=(festival)
# pocketsphinx-testdata: ten short recordings of real people (python -m studies.real_voices, tests)
for pkg in festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts pocketsphinx-testdata; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# read the cache once: `ldconfig -p | grep -q` under pipefail fails whenever grep quits early
# (ldconfig then dies of SIGPIPE), which made every run reinstall these two
LDCONFIG=$(command -v ldconfig 2>/dev/null || echo /sbin/ldconfig)
libs=$("$LDCONFIG" -p 2>/dev/null || true)
case "$libs" in *libportaudio.so.2*) ;; *) need+=(libportaudio2) ;; esac
case "$libs" in *libsndfile.so.1*) ;; *) need+=(libsndfile1) ;; esac
venv_missing=0
if [ -n "$VENV" ] && ! "$TARGET" -c '' >/dev/null 2>&1; then
  venv_missing=1
  # Debian and Ubuntu ship `python3 -m venv` (ensurepip) separately, as python3.X-venv
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=("python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
  fi
fi
if [ "$jetson" = 1 ]; then
  # pycuda builds from source against Python's headers; NVIDIA's torch wheel links OpenBLAS; JetPack's
  # TensorRT Python bindings come from apt (NVIDIA's L4T repository, configured by JetPack)
  if ! "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then
    need+=(python3-dev)
  fi
  for pkg in libopenblas-dev python3-libnvinfer; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
fi

# torch: reused when importable (on a Jetson, NVIDIA's build in the system site-packages)
torch_python=$TARGET
if [ "$venv_missing" = 1 ]; then torch_python=$PY; fi
torch_there=0
if [ "$venv_missing" = 1 ] && [ "$jetson" = 0 ]; then
  torch_there=0  # a new environment without the system site-packages: torch goes into it
elif "$torch_python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' >/dev/null 2>&1; then
  torch_there=1
fi
JETSON_TORCH_MISSING="error: torch is not importable, and on a Jetson it must be NVIDIA's build (PyPI's aarch64 torch has no CUDA for this GPU and wants numpy 2): install libopenblas-dev, cuSPARSELt and NVIDIA's torch wheel for JetPack 6 as docs/JETSON.md shows, then run this again"

if [ "$plan_only" = 1 ]; then
  echo "python: $TARGET"
  echo "jetson: $([ "$jetson" = 1 ] && echo "yes, Jetson Linux $(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/R\1.\2/p' "$TEGRA_RELEASE")" || echo no)"
  echo "system packages: ${need[*]:-none}"
  if [ "$venv_missing" = 1 ]; then
    echo "virtual environment: create $VENV$([ "$jetson" = 1 ] && echo " --system-site-packages")"
  fi
  if [ "$torch_there" = 1 ]; then echo "torch: reuse the installed one"
  elif [ "$jetson" = 1 ]; then echo "torch: stop: ${JETSON_TORCH_MISSING#error: }"
  else echo "torch: pip install torch==2.13.0"; fi
  echo "pip: install -e .[dev$([ "$jetson" = 1 ] && echo ",jetson")]$([ "$jetson" = 1 ] && echo " with the constraints of $JETSON_CONSTRAINTS ($(grep -v '^#' "$JETSON_CONSTRAINTS" | paste -sd' ' -))")"
  exit 0
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- the Python environment
if [ "$venv_missing" = 1 ]; then
  venv_args=()
  if [ "$jetson" = 1 ]; then venv_args+=(--system-site-packages); fi
  note=""
  if [ "$jetson" = 1 ]; then note=" (it sees the system site-packages: JetPack's torch and tensorrt)"; fi
  echo "creating a virtual environment in $VENV with $("$PY" -c 'import sys; print(sys.executable)')$note"
  # a PYTHONPATH left in the shell must not reach the bootstrap: a pip found there would stop
  # ensurepip from putting one into the new environment
  env -u PYTHONPATH "$PY" -m venv ${venv_args[@]+"${venv_args[@]}"} "$VENV"
elif [ -z "$VENV" ]; then
  # pip honours the marker only outside a virtual environment
  marker=$("$PY" -c 'import os, sys, sysconfig; print(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED") if sys.prefix == sys.base_prefix else "")')
  if [ -n "$marker" ] && [ -f "$marker" ] && [ -z "${PIP_BREAK_SYSTEM_PACKAGES:-}" ]; then
    echo "error: $TARGET is managed by the system (PEP 668) and refuses pip installs; unset HBAF_NO_VENV to install into .venv/, or set PIP_BREAK_SYSTEM_PACKAGES=1" >&2
    exit 2
  fi
fi

# torch first, and only if missing: on Jetson it comes from NVIDIA's wheels and must not be replaced.
extras="dev"
if [ "$jetson" = 1 ]; then
  extras="dev,jetson"
  export PIP_CONSTRAINT=$JETSON_CONSTRAINTS  # numpy < 2 for NVIDIA's torch; TensorRT < 11
  export PATH=/usr/local/cuda/bin:$PATH  # nvcc, for pycuda's build
fi
if ! "$TARGET" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' >/dev/null 2>&1; then
  if [ "$jetson" = 1 ]; then
    echo "$JETSON_TORCH_MISSING" >&2
    exit 2
  fi
  "$TARGET" -m pip install -q "torch==2.13.0"
fi

# this package, editable, with the dev extra; skipped when it is installed from this checkout into
# this environment and pyproject.toml has not changed since (the stamp holds its sha256)
prefix=$("$TARGET" -c 'import sys; print(sys.prefix)')
stamp=$prefix/hbaf-edge-install.sha256
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $REPO"
if [ "$jetson" = 1 ]; then want="$want $(sha256sum "$JETSON_CONSTRAINTS" | cut -d' ' -f1)"; fi
installed() {
  [ -f "$stamp" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || return 1
  "$TARGET" - "$REPO" >/dev/null 2>&1 <<'PYCHECK'
import importlib.util, json, os, sys
from importlib import metadata
from urllib.parse import urlparse
from urllib.request import url2pathname

repo, prefix = os.path.realpath(sys.argv[1]), os.path.realpath(sys.prefix)
if importlib.util.find_spec("pytest") is None:  # the dev extra
    sys.exit(1)
for dist in metadata.distributions(name="hbaf-edge"):
    where = os.path.realpath(str(dist.locate_file("")))
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    source = os.path.realpath(url2pathname(urlparse(info.get("url", "")).path))
    if where.startswith(prefix + os.sep) and info.get("dir_info", {}).get("editable") and source == repo:
        sys.exit(0)
sys.exit(1)
PYCHECK
}
if installed; then
  echo "hbaf-edge is already installed from this checkout into $prefix (pyproject.toml unchanged); nothing to do"
else
  rm -f "$stamp"
  "$TARGET" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp" 2>/dev/null || true
fi

# ---------------------------------------------------------------- how to use it
if [ -n "$VENV" ]; then
  shown=$VENV
  case "$VENV" in "$HERE"/*) shown=${VENV#"$HERE"/} ;; esac
  cat <<EOF
hbaf-edge is installed in the virtual environment $VENV. Run its commands directly:
  $shown/bin/hbaf-edge run --source demo
  $shown/bin/hbaf --help; $shown/bin/hbaf-export --help; $shown/bin/python -m pytest -q
or put them on PATH for this shell: source $shown/bin/activate
EOF
else
  echo "hbaf-edge is installed for $TARGET (no virtual environment): hbaf-edge, hbaf and hbaf-export are in $(dirname "$TARGET")"
fi
