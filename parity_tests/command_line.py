"""The training command lines run inside the test process.

A subprocess would mostly measure importing the frameworks and compiling again (5 s or more each);
the command line's own path (argument parsing, the config, the one-line errors and exit codes) is
the same function either way. Tests that need a real process (a terminal, signals, torchrun, the
installed scripts) still start one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from loopspec.backends import BACKEND_PACKAGES, backend_module
from loopspec.cli import run_cli

MODULES = {backend: f"{package}.train" for backend, package in BACKEND_PACKAGES.items()}
ROOT = Path(__file__).resolve().parent.parent


def run_here(backend: str, *argv: str) -> int:
    """`python -m torchloop.train ARGV` (or flaxloop's) in this process: its exit code."""
    try:
        return run_cli(f"python -m {MODULES[backend]}", backend, backend_module(backend, "train").fit, list(argv))
    except SystemExit as usage:  # argparse's own errors
        return int(usage.code or 0)


def refusal(capfd: pytest.CaptureFixture, backend: str, *argv: str) -> str:
    """The one line a refused command prints, checked as a terminal would show it: exit code 2, that
    line alone on stderr (capfd: what C++ libraries write to the descriptor too), and no Python
    warning (which a separate process would have printed there)."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_here(backend, *argv)
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and not caught, (code, err, [str(w.message) for w in caught])
    return lines[0]


def run_process(backend: str, raw: dict, out: Path, replicas: int, *extra: str) -> Path:
    """The command line as its own process (torch's replicas under torchrun): the config written
    beside `out`, the run directory returned; a failure shows the command and its stderr's end."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = ["--config", str(config), "--out", str(out), "--quiet", "--set", f"train.devices={replicas}", *extra]
    if backend == "torch" and replicas > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={replicas}"]
        command = [*launcher, "-m", MODULES["torch"], *args]
    else:
        command = [sys.executable, "-m", MODULES[backend], *args]
    # faulthandler: a rank that aborts prints every thread's Python stack into the stderr shown below
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr[-3000:]}"
    return out
