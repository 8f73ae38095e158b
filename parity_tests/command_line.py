"""The training command lines run inside the test process.

A subprocess would mostly measure importing the frameworks and compiling again (5 s or more each);
the command line's own path (argument parsing, the config, the one-line errors and exit codes) is
the same function either way. Tests that need a real process (a terminal, signals, torchrun, the
installed scripts) still start one.
"""

from __future__ import annotations

import importlib

from loopspec.cli import run_cli

MODULES = {"torch": "torchloop.train", "jax": "flaxloop.train"}


def run_here(backend: str, *argv: str) -> int:
    """`python -m torchloop.train ARGV` (or flaxloop's) in this process: its exit code."""
    module = MODULES[backend]
    return run_cli(f"python -m {module}", backend, importlib.import_module(module).fit, list(argv))
