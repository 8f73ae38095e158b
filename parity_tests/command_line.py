"""The training command lines run inside the test process.

A subprocess would mostly measure importing the frameworks and compiling again (5 s or more each);
the command line's own path (argument parsing, the config, the one-line errors and exit codes) is
the same function either way. Tests that need a real process (a terminal, signals, torchrun, the
installed scripts) still start one.
"""

from __future__ import annotations

import warnings

import pytest

from loopspec.backends import backend_module
from loopspec.cli import run_cli

MODULES = {"torch": "torchloop.train", "jax": "flaxloop.train"}


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
