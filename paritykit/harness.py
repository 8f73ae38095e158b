"""Run one config on both backends in this process and compare the two runs."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import flaxloop.precision
import flaxloop.train
import torchloop.precision
import torchloop.train
from loopspec.comparison import Report, compare_runs, differing_keys, run_facts
from loopspec.config import apply_override, config_from_dict, load_config
from loopspec.errors import UserError
from loopspec.metrics import read_metrics
from loopspec.weights import load_weights
from paritykit.sensitivity import (
    ENVELOPE_RUNS,
    ENVELOPE_SEEDS,
    EXACT_STEP_QUANTITIES,
    HORIZON,
    MULTIPLE,
    Trajectory,
    Verdict,
    dataset_files,
    divergence,
    envelope,
    exact_checks,
    first_steps,
    first_updates,
    judge,
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
    raw: dict[str, Any],
    out: Path,
    backends: tuple[str, ...] = ("torch", "jax"),
    init: Optional[Path] = None,
    reverse_batch_rows: bool = False,
) -> dict[str, Path]:
    config = config_from_dict(copy.deepcopy(raw))
    fits = {"torch": torchloop.train.fit, "jax": flaxloop.train.fit}
    runs = {}
    for backend in backends:
        runs[backend] = out / backend
        given = init
        if given is None and backend == "jax" and config.model.name == "custom" and "torch" in runs:
            given = runs["torch"] / "init.safetensors"  # a custom pair starts from torch's module's own init
        fits[backend](config, runs[backend], init=given, reverse_batch_rows=reverse_batch_rows)
    return runs


def perturbed_runs(
    moved: Sequence[dict[str, Any]], init: Path, out: Path, backends: Sequence[str]
) -> list[dict[str, Path]]:
    """Each backend's envelope runs (paritykit/sensitivity.py), one per ENVELOPE_RUNS draw: the
    configs `moved` read the inputs moved by one ulp with that draw's seed (dataset_files), the
    weights `init` are moved likewise, the rows of each micro-batch reversed or not, and torch runs
    on its other family of CPU kernels."""
    samples = []
    for index, ((seed, reverse), moved_inputs) in enumerate(zip(ENVELOPE_RUNS, moved, strict=True)):
        moved_weights = write_perturbed_init(init, out / f"one_ulp-{index}.safetensors", seed)
        runs = {}
        for backend in dict.fromkeys(backends):
            kernels = other_torch_kernels() if backend == "torch" else contextlib.nullcontext()
            with kernels:
                runs.update(run_backends(moved_inputs, out / f"perturbed-{index}", (backend,), moved_weights, reverse))
        samples.append(runs)
    return samples


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
    reference, moved = dataset_files(first_updates(raw, horizon), out, ENVELOPE_SEEDS)
    runs = run_backends(reference, out / "reference")
    samples = perturbed_runs(moved, runs["torch"] / "init.safetensors", out, tuple(runs))
    self_pairs = [(runs[backend], sample[backend]) for sample in samples for backend in runs]
    return judge_runs((runs["torch"], runs["jax"]), self_pairs, multiple)


def recorded_verdict(run_a: Path, run_b: Path, horizon: int = HORIZON) -> Verdict:
    """Two recorded float32 runs of one config from the same initial weights (parity-compare's float32
    verdict): their first `horizon` updates against the envelope measured now, on this machine, from
    each backend's run of that config moved by one ulp; their learning rate and momentum against one
    rounding of torch's over the whole run (the first `horizon` updates for plateau, whose cuts follow
    each run's own float32 metric). Raises UserError (one line) when the runs cannot be judged so."""
    facts = [run_facts(Path(run)) for run in (run_a, run_b)]
    if differing_keys(facts[0]["config"], facts[1]["config"]):
        raise UserError("the runs are of different configs")
    if any(fact["precision"] != "fp32" for fact in facts) or any(f["backend"] not in ("torch", "jax") for f in facts):
        raise UserError("both runs must be fp32 runs of the torch or jax backend")
    inits = [load_weights(Path(run) / "init.safetensors") for run in (run_a, run_b)]
    if inits[0].keys() != inits[1].keys() or any(not np.array_equal(inits[0][k], inits[1][k]) for k in inits[0]):
        raise UserError("the runs started from different weights; train the second with --init FIRST/init.safetensors")
    raw = copy.deepcopy(facts[0]["config"])
    torch_first = facts[0]["backend"] == "torch"
    with tempfile.TemporaryDirectory() as tmp:
        backends = [fact["backend"] for fact in facts]
        _, moved = dataset_files(first_updates(raw, horizon), Path(tmp), ENVELOPE_SEEDS)
        samples = perturbed_runs(moved, Path(run_a) / "init.safetensors", Path(tmp), backends)
        perturbed = [{backend: Trajectory.read(run) for backend, run in sample.items()} for sample in samples]
        recorded = [Trajectory.read(Path(run)) for run in (run_a, run_b)]
    first = [first_steps(trajectory, horizon) for trajectory in recorded]
    steps_only = lambda divergences: {k: v for k, v in divergences.items() if k[0] == "step"}  # noqa: E731
    cross = steps_only(divergence(*first))
    for quantity in EXACT_STEP_QUANTITIES:
        cross.pop(("step", quantity), None)
    bounds = envelope(
        [
            steps_only(divergence(ours, sample[fact["backend"]]))
            for sample in perturbed
            for ours, fact in zip(first, facts)
        ]
    )
    verdict = judge(cross, bounds)
    plateau = raw.get("schedule", {}).get("name") == "plateau"
    scheduled = first if plateau else recorded
    verdict.checks += exact_checks(*(scheduled if torch_first else scheduled[::-1]))  # torch's value the reference
    return verdict
