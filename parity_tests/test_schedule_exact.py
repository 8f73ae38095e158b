"""Float32 schedules are exact: over whole runs of generated configs, the learning rate and momentum
every JAX update uses are torch's doubles rounded once (at most 0.5 float32 ulp), on both JAX
accumulation paths (the scanned window and optax.MultiSteps), in fp32 and mixed precision, after a
resume mid-schedule (from either backend's checkpoint), and the float32 verdict gives every generated
config a verdict without error.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings

import flaxloop.train
from loopspec.config import config_from_dict
from loopspec.metrics import read_metrics
from parity_tests.schedule_configs import FULL, run_configs
from parity_tests.selection import cases
from paritykit.harness import precision_unavailable, run_backends, sensitivity_verdict
from paritykit.sensitivity import EXACT_ULPS, record_margin, ulps_apart

pytestmark = pytest.mark.float32
PRECISIONS = ("fp32", "bf16", *(() if precision_unavailable("jax", "fp16") else ("fp16",)))


def step_series(run: Path) -> dict[str, np.ndarray]:
    steps = read_metrics(run / "metrics.jsonl")["step"]
    series = {"lr": np.array([s["lr"] for s in steps])}
    if "momentum" in steps[0]:
        series["momentum"] = np.array([s["momentum"] for s in steps if "momentum" in s])
    return series


def assert_torch_rates(torch_run: Path, jax_run: Path, what: str) -> None:
    expected, got = step_series(torch_run), step_series(jax_run)
    assert expected.keys() == got.keys(), what
    for quantity in expected:
        assert len(got[quantity]) == len(expected[quantity]), f"{what}: {quantity} record counts differ"
        ulps = ulps_apart(got[quantity], expected[quantity])
        worst = int(ulps.argmax())
        assert ulps[worst] <= EXACT_ULPS, (
            f"{what}: {quantity} {ulps[worst]:.2f} float32 ulp from torch's at update {worst + 1}: "
            f"jax {got[quantity][worst]!r}, torch {expected[quantity][worst]!r}"
        )


# 30 under FULL: 4.5 s an example under `make profile` (at 60, that step's longest test); new configs each run
@settings(max_examples=30 if FULL else 3, suppress_health_check=[HealthCheck.too_slow])
@given(raw=run_configs(precisions=PRECISIONS, decisive_plateau=True))
def test_generated_runs_use_torch_rates_at_every_update(raw: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_backends(raw, Path(tmp))
        assert_torch_rates(runs["torch"], runs["jax"], "scanned window")
        if raw["train"]["accumulation_steps"] > 1 and raw["train"]["precision"] != "fp16":  # MultiSteps: no fp16
            multisteps = copy.deepcopy(raw)
            multisteps["train"]["accumulation"] = "multisteps"
            other = run_backends(multisteps, Path(tmp) / "multisteps", ("jax",))
            assert_torch_rates(runs["torch"], other["jax"], "optax.MultiSteps")


RESUMED = {
    "three-phase onecycle, momentum cycled": {"name": "onecycle", "three_phase": True, "max_lr": 0.01},
    "cosine per step past T_max": {"name": "cosine", "interval": "step", "T_max": 17, "eta_min": 1e-5},
    "cosine per epoch": {"name": "cosine", "eta_min": 1e-5},
    "warm-up cosine": {"name": "warmup_cosine", "warmup": 13, "start_factor": 0.01, "eta_min": 1e-6},
    "exponential": {"name": "exponential", "gamma": 0.9},
    "plateau": {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.5},
}


@pytest.mark.parametrize(  # make test: each schedule resumed from one source, the sources alternating
    "schedule,source",
    cases(
        [(schedule, source) for schedule in RESUMED for source in ("torch", "jax")],
        lambda case: (list(RESUMED).index(case[0]) + ("torch", "jax").index(case[1])) % 2 == 0,
        lambda case: f"{case[0]}-{case[1]}",
    ),
)
def test_resumed_float32_run_keeps_torch_rates(schedule: str, source: str, tmp_path: Path) -> None:
    """JAX resumed mid-epoch from a checkpoint of either backend continues with torch's exact rates;
    torch resumed from a JAX checkpoint continues its recurrence from the double the checkpoint holds."""
    raw = {
        "data": {"name": "intrusion", "num_samples": 600, "batch_size": 32},
        "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": RESUMED[schedule],
        "train": {"epochs": 4, "precision": "fp32", "log_every": 0, "verbose": 0, "checkpoint": {"every_steps": 23}},
    }
    runs = run_backends(raw, tmp_path / "whole")
    checkpoint = runs[source] / "checkpoints" / "step-00000046"
    for backend in ("jax", "torch"):
        out = tmp_path / f"{backend}-from-{source}"
        train = {"jax": flaxloop.train.fit, "torch": __import__("torchloop.train").train.fit}[backend]
        train(config_from_dict(copy.deepcopy(raw)), out, resume=checkpoint)
        assert_torch_rates(runs["torch"], out, f"{backend} resumed from {source} at update 46")


# Each example trains four float32 runs (3.5 s under `make profile`, 2026-12-02). derandomize: CI judges
# the same configs as the last local run (a float32 verdict is a measurement; one that fails is kept as a
# named case in test_float32.py). No shrinking: the falsifying config is printed whole anyway.
@settings(
    max_examples=30 if FULL else 2,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(raw=run_configs())
def test_generated_configs_get_a_float32_verdict(raw: dict) -> None:
    """The verdict keeps the generated run's schedule and gives a verdict, which is AGREE for the
    backends as they are."""
    with tempfile.TemporaryDirectory() as tmp:
        verdict = sensitivity_verdict(raw, Path(tmp), horizon=12)
    record_margin("generated config", verdict, config=raw)
    assert verdict.agree, "\n" + verdict.render()
