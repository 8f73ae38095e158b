"""Run one config on both backends in this process and compare the two runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import flaxloop.train
import torchloop.train
from loopspec.config import apply_override, config_from_dict, load_config
from loopspec.metrics import read_metrics
from parity_tests.compare import Report, compare_runs


def run_backends(raw: dict[str, Any], out: Path, backends: tuple[str, ...] = ("torch", "jax"),
                 init: Optional[Path] = None) -> dict[str, Path]:
    config = config_from_dict(copy.deepcopy(raw))
    fits = {"torch": torchloop.train.fit, "jax": flaxloop.train.fit}
    runs = {}
    for backend in backends:
        runs[backend] = out / backend
        fits[backend](config, runs[backend], init_path=init)
    return runs


def run_both(raw: dict[str, Any], out: Path, rtol: float = 1e-10, steps: Optional[int] = None,
             init: Optional[Path] = None) -> Report:
    runs = run_backends(raw, out, init=init)
    return compare_runs(runs["torch"], runs["jax"], rtol, steps)


def recipe(path: str, *overrides: str) -> dict[str, Any]:
    """A config file from configs/ with overrides, as a raw dict."""
    raw: dict[str, Any] = load_config(path).to_dict()
    for item in overrides:
        apply_override(raw, item)
    return raw


def summary(run: Path) -> dict[str, Any]:
    return read_metrics(run / "metrics.jsonl")["summary"][-1]
