"""A pairwise design over the feature axes: every pair of values of two axes appears in some float64
run, each run trained on both backends and compared at 1e-10 (parity_tests/test_pairwise.py), and
summarised by `python -m paritykit.report` in docs/PARITY.md.

Written here rather than taken from a package: the design must skip pairs the config refuses
(a Transformer with a focal loss, a plateau schedule per step), which the pairwise generators on
PyPI take only as opaque filters, and a greedy fill over ~13 axes is a few lines.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

AXES: dict[str, list[str]] = {
    "model": ["mlp", "cnn", "gpt", "pair"],
    "optimizer": ["sgd", "adam", "adamw", "rmsprop", "adagrad"],
    "loss": ["cross_entropy", "focal", "mse", "l1"],
    "schedule": ["none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau"],
    "interval": ["step", "epoch"],
    "accumulation": ["1", "2 manual", "2 multisteps"],
    "clipping": ["none", "norm", "value"],
    "dropout": ["none", "parity"],
    "early_stopping": ["off", "on"],
    "on_nonfinite": ["stop", "skip"],
    "resume": ["none", "mid-run"],
}
# Replicas (DDP against JAX sharding) need processes launched per run; parity_tests/test_data_parallel.py
# covers them with every accumulation path, clipping and BatchNorm.

STEP_ONLY = {"warmup_cosine", "onecycle"}
EPOCH_ONLY = {"plateau"}


def allowed(values: dict[str, str]) -> bool:
    """Whether a partial row is a config the schema accepts (the pairs the design can cover)."""
    model, loss, schedule = values.get("model"), values.get("loss"), values.get("schedule")
    if model in ("gpt", "pair") and loss not in (None, "cross_entropy"):
        return False
    if model == "cnn" and values.get("dropout") == "parity":
        return False
    if model == "pair" and values.get("dropout") == "none":  # its dropout layers are always there
        return False
    interval = values.get("interval")
    if schedule in STEP_ONLY and interval == "epoch" or schedule in EPOCH_ONLY and interval == "step":
        return False
    return True


def pairs_of(axes: dict[str, list[str]]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    names = list(axes)
    return {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in axes[a]
        for vb in axes[b]
        if allowed({a: va, b: vb})
    }


def covered(row: dict[str, str]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    names = list(AXES)
    return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2) if a in row and b in row}


def design() -> list[dict[str, str]]:
    """Rows covering every allowed pair (greedy, deterministic: the same design on every machine)."""
    uncovered = pairs_of(AXES)
    rows: list[dict[str, str]] = []
    while uncovered:
        (a, va), (b, vb) = min(uncovered)
        row = {a: va, b: vb}
        for axis in AXES:
            if axis in row:
                continue
            options = [v for v in AXES[axis] if allowed({**row, axis: v})]
            row[axis] = max(options, key=lambda v: (len(covered({**row, axis: v}) & uncovered), -AXES[axis].index(v)))
        uncovered -= covered(row)
        rows.append({axis: row[axis] for axis in AXES})
    return rows


# ----------------------------------------------------------------------------- rows as configs

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "adam": {"name": "adam", "lr": 2e-3, "weight_decay": 1e-4, "amsgrad": True},
    "adamw": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05},
    "rmsprop": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.5, "centered": True},
    "adagrad": {"name": "adagrad", "lr": 0.02, "lr_decay": 1e-3, "initial_accumulator_value": 0.1},
}
SCHEDULES: dict[str, dict[str, Any]] = {
    "none": {"name": "none"},
    "step": {"name": "step", "step_size": 7, "gamma": 0.5},
    "multistep": {"name": "multistep", "milestones": [3, 9, 9], "gamma": 0.5},
    "exponential": {"name": "exponential", "gamma": 0.97},
    "cosine": {"name": "cosine", "eta_min": 1e-5},
    "warmup_cosine": {"name": "warmup_cosine", "warmup": 5, "eta_min": 1e-5},
    "onecycle": {"name": "onecycle", "max_lr": 0.01},
    "plateau": {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.5},
}
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": {"name": "intrusion", "num_samples": 400, "batch_size": 32},
        "model": {"name": "mlp", "hidden": [16, 8]},
    },
    "cnn": {"data": {"name": "digits", "batch_size": 64}, "model": {"name": "cnn", "channels": [4, 8, 8]}},
    "gpt": {
        "data": {"name": "text", "block_size": 16, "stride": 32, "batch_size": 32},
        "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
    },
    "pair": {  # a user's pair from import strings: a residual MLP with LayerNorm and GELU (linen)
        "data": {"name": "intrusion", "num_samples": 400, "batch_size": 32},
        "model": {
            "name": "custom",
            "torch": "parity_tests.pairs:residual_mlp",
            "flax": "parity_tests.pairs:linen_residual_mlp",
            "kwargs": {"features": 41},
        },
    },
}
EPOCHS = 3


def row_config(row: dict[str, str], seed: int = 11) -> dict[str, Any]:
    """A small float64 config for one design row (a few seconds a backend)."""
    spec = MODELS[row["model"]]
    model = dict(spec["model"])
    if row["model"] in ("mlp", "gpt"):
        model["dropout"] = 0.1 if row["dropout"] == "parity" else 0.0
    if row["dropout"] == "parity":
        model["dropout_mode"] = "parity"
    schedule = dict(SCHEDULES[row["schedule"]])
    if row["schedule"] == "onecycle" and row["optimizer"] == "adagrad":
        schedule["cycle_momentum"] = False  # Adagrad has no momentum or beta1 to cycle
    optimizer = dict(OPTIMIZERS[row["optimizer"]])
    if row["model"] == "gpt":  # a Transformer this small at these rates amplifies rounding past 1e-10 in 27 updates
        optimizer["lr"] /= 4
        schedule["max_lr"] = schedule.get("max_lr", 0.01) / 4 if row["schedule"] == "onecycle" else None
        schedule = {k: v for k, v in schedule.items() if v is not None}
    if row["schedule"] in ("step", "multistep", "exponential", "cosine"):
        schedule["interval"] = row["interval"]
        if row["interval"] == "epoch" and row["schedule"] == "step":
            schedule["step_size"] = 1
    loss: dict[str, Any] = {"name": row["loss"]}
    if row["loss"] == "cross_entropy":
        loss["label_smoothing"] = 0.05
    train: dict[str, Any] = {"epochs": EPOCHS, "precision": "fp64", "log_every": 0, "verbose": 0}
    if row["accumulation"] != "1":
        steps, how = row["accumulation"].split()
        train.update(accumulation_steps=int(steps), accumulation=how)
    if row["clipping"] == "norm":
        train["clip_grad_norm"] = 0.5
    elif row["clipping"] == "value":
        train["clip_grad_value"] = 0.02
    if row["early_stopping"] == "on":
        train["early_stopping"] = {"enabled": True, "patience": 1, "restore_best_weights": True}
    train["on_nonfinite"] = row["on_nonfinite"]
    return {
        "seed": seed,
        "data": {**spec["data"], "drop_last": True},
        "model": model,
        "loss": loss,
        "optimizer": optimizer,
        "schedule": schedule,
        "train": train,
    }


def row_id(row: dict[str, str]) -> str:
    return ",".join(f"{row[axis]}" for axis in AXES)


def rows_by_axis(rows: list[dict[str, str]]) -> Iterator[tuple[str, str, list[int]]]:
    for axis, values in AXES.items():
        for value in values:
            yield axis, value, [i for i, row in enumerate(rows) if row[axis] == value]


RESUME_AT = 7  # the JAX run of a "mid-run" row continues from torch's checkpoint after this update


@dataclass
class RowResult:
    row: dict[str, str]
    agree: bool
    steps: int
    worst_step: float  # the largest relative difference of any per-step record
    worst_weight: float  # of any final tensor
    report: str


def run_row(row: dict[str, str], root: Path) -> RowResult:
    """torch, then JAX from torch's initial weights (or, for a mid-run resume, from torch's checkpoint
    after update RESUME_AT), compared over the whole run at 1e-10."""
    from loopspec import fit
    from loopspec.checkpoint import step_name
    from loopspec.comparison import compare_runs

    raw = row_config(row)
    if row["resume"] == "mid-run":
        raw["train"]["checkpoint"] = {"every_steps": RESUME_AT, "keep_last": 1000}
    torch_run = fit(raw, root / "torch", backend="torch")
    resume = torch_run.out_dir / "checkpoints" / step_name(RESUME_AT) if row["resume"] == "mid-run" else None
    init = None if resume is not None else torch_run.out_dir / "init.safetensors"
    jax_run = fit(raw, root / "jax", backend="jax", init=init, resume=resume)
    report = compare_runs(torch_run.out_dir, jax_run.out_dir, 1e-10)
    steps = [r.max_rel for r in report.rows if r.unit == "step" and r.quantity != "step skipped"]
    weights = [r.max_rel for r in report.rows if r.unit == "tensor" and r.quantity.startswith("final")]
    return RowResult(
        row,
        report.agree,
        int(torch_run.summary["steps"]),
        max(steps, default=0.0),
        max(weights, default=0.0),
        report.render(),
    )
