"""Acceptance: full float64 training runs with each schedule agree between backends to
1e-10 per step, the schedule advances once per applied update (or epoch), and torch never
warns that the scheduler stepped before the optimizer."""

from __future__ import annotations

import warnings

import pytest

from loopspec.comparison import compare_runs
from loopspec.metrics import read_metrics
from parity_tests.matrix import parity_config
from parity_tests.selection import cases
from paritykit.harness import run_backends

SCHEDULES = {
    "step": ("mlp", "sgd", {"name": "step", "step_size": 3, "gamma": 0.5}),
    "multistep": ("cnn", "adam", {"name": "multistep", "milestones": [2, 4, 4], "gamma": 0.5}),
    "exponential": ("mlp", "rmsprop", {"name": "exponential", "gamma": 0.8}),
    "cosine-per-step": ("cnn", "sgd", {"name": "cosine", "interval": "step", "eta_min": 1e-4}),
    "warmup_cosine": ("mlp", "adamw", {"name": "warmup_cosine", "warmup": 40, "start_factor": 0.1}),
    "onecycle-sgd-momentum": ("cnn", "sgd", {"name": "onecycle", "max_lr": 0.05}),
    "onecycle-adam-beta1-three-phase": ("mlp", "adam", {"name": "onecycle", "max_lr": 0.004, "three_phase": True}),
    "onecycle-per-epoch": ("mlp", "adamw", {"name": "onecycle", "interval": "epoch", "anneal_strategy": "linear"}),
    "plateau": ("mlp", "adamw", {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.1}),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_run_agrees_in_float64(name: str, tmp_path) -> None:
    model, optimizer, schedule = SCHEDULES[name]
    raw = parity_config(model, optimizer, "cross_entropy" if model != "mlp" else "focal", steps=320)
    raw["schedule"] = schedule
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = run_backends(raw, tmp_path)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    report = compare_runs(runs["torch"], runs["jax"], 1e-10)
    print(report.render())
    assert report.agree, "\n" + report.render()
    steps = read_metrics(runs["torch"] / "metrics.jsonl")["step"]
    lrs = [s["lr"] for s in steps]
    assert len(steps) >= 300 and len(set(lrs)) > 2, "the schedule must change the learning rate"
    if schedule["name"] == "onecycle":
        assert "momentum" in steps[0] and min(s["momentum"] for s in steps) < max(s["momentum"] for s in steps)
        assert next(row for row in report.rows if row.quantity == "step momentum").max_rel <= 1e-10
    if (
        schedule.get(
            "interval", "epoch" if schedule["name"] in ("step", "multistep", "exponential", "plateau") else "step"
        )
        == "epoch"
    ):
        per_epoch = {}
        for s in steps:
            per_epoch.setdefault(s["epoch"], set()).add(s["lr"])
        assert all(len(v) == 1 for v in per_epoch.values()), "an epoch schedule holds the rate for the whole epoch"


RECIPES = sorted(str(p) for p in __import__("pathlib").Path("configs").glob("schedule_*.yaml"))


# make test runs one shipped recipe: every schedule's own run is in test_schedule_run_agrees_in_float64
@pytest.mark.parametrize("path", cases(RECIPES, lambda path: path.endswith("schedule_warmup_cosine.yaml")))
def test_schedule_recipes_run_and_agree_in_float64(path: str, tmp_path) -> None:
    """Each shipped schedule config, shortened (400 samples, 3 epochs), on both backends."""
    from paritykit.harness import recipe, run_both

    shorter = ["schedule.warmup=5"] if "warmup" in path else []  # the recipe's 50-step warm-up outlasts 15 steps
    raw = recipe(
        path,
        "data.num_samples=400",
        "train.epochs=3",
        "train.precision=fp64",
        "train.log_every=0",
        "model.channels=[8,8,8]",
        *shorter,
    )
    report = run_both(raw, tmp_path)
    assert report.agree, "\n" + report.render()
