#!/usr/bin/env bash
# Make sure an interpreter with the project's dependencies exists; print its path on stdout.
#
# 1. An interpreter that already imports everything (.venv, or $PYTHON such as the GPU
#    image's python3) is used as is: nothing is installed or replaced.
# 2. Otherwise .venv is created with --system-site-packages, so an installed torch/jax is
#    reused. Without torch, the CPU build torch==2.13.0 is installed first, so the range
#    in pyproject.toml never pulls the newest release and its CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
MODULES="torch jax jaxlib flax optax safetensors yaml matplotlib sklearn scipy tqdm tensorboardX pytest xdist ruff mypy hypothesis"
CHECK="import ${MODULES// /, }"
# Found, not imported: importing them all took 6.5 s before every make target (measured); a broken
# install still fails at its first import, with that import's own error.
FOUND='import importlib.util, sys; sys.exit(any(importlib.util.find_spec(name) is None for name in sys.argv[1:]))'

log() { echo "setup: $*" >&2; }

for candidate in "$VENV/bin/python" "$(command -v "$PYTHON" || true)"; do
    # shellcheck disable=SC2086 # one argument per module name
    if [ -x "$candidate" ] && "$candidate" -c "$FOUND" $MODULES 2>/dev/null; then
        # numba (the [torch] extra's compiled parity masks) came after some .venv were made: added once
        # to a .venv without it; where pip cannot fetch it, torch draws the masks with NumPy instead.
        if [ "$candidate" = "$VENV/bin/python" ] && [ ! -e "$VENV/.numba-tried" ] && ! "$candidate" -c "$FOUND" numba; then
            touch "$VENV/.numba-tried"
            log "adding numba to $VENV (pip install numba)"
            "$candidate" -m pip install --quiet "numba>=0.60" >&2 || log "numba not installed: torch draws parity masks with NumPy"
        fi
        echo "$candidate"
        exit 0
    fi
done

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if "$PY" -c 'import torch' 2>/dev/null; then
    version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
    if ! "$PY" -c "import sys; v=tuple(map(int, '$version'.split('.')[:2])); sys.exit(v < (2, 6))"; then
        log "installed torch $version is older than 2.6; upgrade it yourself (pip would fetch a CUDA build)"
        exit 1
    fi
    log "keeping installed torch $version"
else
    log "installing the CPU build of torch 2.13.0"
    "$PY" -m pip install --quiet "torch==2.13.0" >&2
fi
log "installing jax, flax, optax and the rest (pip install -e .[all,test])"
"$PY" -m pip install --quiet -e ".[all,test]" >&2
"$PY" -c "$CHECK"
echo "$PY"
