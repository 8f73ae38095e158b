"""Run one config on both backends in this process and compare the two runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import torch

import flaxloop.precision
import flaxloop.train
import torchloop.precision
import torchloop.train
from loopspec.comparison import Report, compare_runs
from loopspec.config import apply_override, config_from_dict, load_config
from loopspec.errors import UserError
from loopspec.metrics import read_metrics
from paritykit.sensitivity import (
    HORIZON,
    MULTIPLE,
    Verdict,
    dataset_files,
    first_updates,
    judge_runs,
    other_torch_kernels,
    write_perturbed_init,
)


def precision_unavailable(backend: str, precision: str) -> Optional[str]:
    """Why this machine cannot run `precision` on `backend` (the CLI's start-up error), or None."""
    check = {"torch": torchloop.precision, "jax": flaxloop.precision}[backend]
    device = torch.device("cpu") if backend == "torch" else flaxloop.precision.resolve_device("cpu")
    try:
        check.check_precision(precision, device)
    except UserError as err:
        return str(err)
    return None


def run_backends(
    raw: dict[str, Any], out: Path, backends: tuple[str, ...] = ("torch", "jax"), init: Optional[Path] = None
) -> dict[str, Path]:
    config = config_from_dict(copy.deepcopy(raw))
    fits = {"torch": torchloop.train.fit, "jax": flaxloop.train.fit}
    runs = {}
    for backend in backends:
        runs[backend] = out / backend
        fits[backend](config, runs[backend], init_path=init)
    return runs


def run_both(
    raw: dict[str, Any], out: Path, rtol: float = 1e-10, steps: Optional[int] = None, init: Optional[Path] = None
) -> Report:
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


def sensitivity_verdict(raw: dict[str, Any], out: Path, horizon: int = HORIZON, multiple: float = MULTIPLE) -> Verdict:
    """The config's first `horizon` float32 updates, with the whole run's schedule, torch vs JAX
    judged against each backend's own one-ulp sensitivity (paritykit/sensitivity.py). A config no
    verdict can be given for raises UserError (one line)."""
    reference, moved_inputs = dataset_files(first_updates(raw, horizon), out)
    runs = run_backends(reference, out / "reference")
    moved_weights = write_perturbed_init(runs["torch"] / "init.safetensors", out / "one_ulp.safetensors")
    with other_torch_kernels():
        perturbed = run_backends(moved_inputs, out / "perturbed", ("torch",), init=moved_weights)
    perturbed.update(run_backends(moved_inputs, out / "perturbed", ("jax",), init=moved_weights))
    return judge_runs((runs["torch"], runs["jax"]), [(runs[b], perturbed[b]) for b in runs], multiple)
