"""Epoch schedules after skipped updates: the schedule advances once per validation, skips or not.

Torch steps an epoch scheduler after each validation whatever happened in the epoch; a
skipped update (non-finite under on_nonfinite: skip, or an fp16 overflow) must not shift the
JAX side's epoch boundaries. Every epoch schedule, with each kind of skip, under manual
accumulation and optax.MultiSteps (fp16 is manual only: MultiSteps cannot skip an overflow).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from loopspec.comparison import compare_runs
from loopspec.metrics import read_metrics
from parity_tests.matrix import parity_config
from parity_tests.selection import cases
from parity_tests.test_precision import OVERFLOW
from paritykit.harness import precision_unavailable, run_backends
from paritykit.sensitivity import EXACT_ULPS, ulps_apart

EPOCH_SCHEDULES = {
    "step": {"name": "step", "step_size": 1, "gamma": 0.5},
    "multistep": {"name": "multistep", "milestones": [1, 3, 3], "gamma": 0.5},
    "exponential": {"name": "exponential", "gamma": 0.7},
    "cosine": {"name": "cosine", "eta_min": 1e-5},
    "warmup_cosine": {"name": "warmup_cosine", "interval": "epoch", "warmup": 1, "start_factor": 0.1},
    "onecycle": {"name": "onecycle", "interval": "epoch", "pct_start": 0.4},
    "plateau": {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.5},
}
EPOCHS = 5


def skipped_steps(run: Path) -> list[int]:
    return [i for i, record in enumerate(read_metrics(run / "metrics.jsonl")["step"]) if record["skipped"]]


@pytest.mark.parametrize(  # make test: every schedule once, the two accumulations alternating
    "schedule,accumulation",
    cases(
        [(schedule, accumulation) for schedule in EPOCH_SCHEDULES for accumulation in ("manual", "multisteps")],
        lambda case: (list(EPOCH_SCHEDULES).index(case[0]) + ("manual", "multisteps").index(case[1])) % 2 == 0,
        "-".join,
    ),
)
def test_epoch_schedule_after_nonfinite_skips(
    nan_in_training_row, schedule: str, accumulation: str, tmp_path: Path
) -> None:
    raw = parity_config("mlp", "sgd", "bce_pos_weight", steps=10_000)
    raw["schedule"] = copy.deepcopy(EPOCH_SCHEDULES[schedule])
    raw["train"].update(epochs=EPOCHS, on_nonfinite="skip", accumulation_steps=2, accumulation=accumulation)
    runs = run_backends(raw, tmp_path)
    report = compare_runs(runs["torch"], runs["jax"], 1e-10)
    assert report.agree, "\n" + report.render()
    assert len(skipped_steps(runs["torch"])) == EPOCHS  # one NaN batch per epoch
    lrs = {record["lr"] for record in read_metrics(runs["torch"] / "metrics.jsonl")["step"] if "lr" in record}
    assert len(lrs) >= 2, "the schedule must move during the run"


@pytest.mark.parametrize("schedule", list(EPOCH_SCHEDULES))
def test_epoch_schedule_after_fp16_overflow_skips(schedule: str, tmp_path: Path) -> None:
    if reason := precision_unavailable("jax", "fp16"):
        pytest.skip(reason)
    raw = copy.deepcopy(OVERFLOW)
    raw["data"]["num_samples"] = 1600  # 25 updates per epoch: overflow skips in every epoch
    raw["schedule"] = copy.deepcopy(EPOCH_SCHEDULES[schedule])
    raw["train"].update(epochs=EPOCHS, max_steps=None)
    raw["train"]["loss_scale"]["growth_interval"] = 10
    runs = run_backends(raw, tmp_path)
    steps = {backend: read_metrics(run / "metrics.jsonl")["step"] for backend, run in runs.items()}
    skips = {backend: skipped_steps(run) for backend, run in runs.items()}
    assert skips["torch"] == skips["jax"]
    assert len({step["epoch"] for step in steps["torch"] if step["skipped"]}) == EPOCHS, "skips in every epoch"
    assert len(steps["torch"]) == len(steps["jax"])
    ulps = ulps_apart([b["lr"] for b in steps["jax"]], [a["lr"] for a in steps["torch"]])
    assert ulps.max() <= EXACT_ULPS, f"lr {ulps.max():.2f} float32 ulp from torch's at update {ulps.argmax() + 1}"
