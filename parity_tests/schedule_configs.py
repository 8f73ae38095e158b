"""Generated schedule configs (hypothesis): every schedule, interval, phase count, anneal strategy,
warm-up length and run length that the config accepts, over small runs that train in seconds.

`run_configs()` draws whole training configs (a tiny MLP on generated intrusion records); each is
valid as drawn (rejected ones are filtered by the config's own checks), so a test that fails on
one has found a config a user could write.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import assume, settings
from hypothesis import strategies as st

from loopspec.config import config_from_dict
from loopspec.errors import ConfigError
from loopspec.schedules import plan_schedule

# `make test` draws a few configs per test; `make test-full` (HYPOTHESIS_PROFILE=full) many.
settings.register_profile("default", deadline=None, print_blob=True)
settings.register_profile("full", deadline=None, print_blob=True, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
FULL = os.environ.get("HYPOTHESIS_PROFILE") == "full"

SCHEDULES = ("none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau")
OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"name": "adam", "lr": 0.003},
    "adamw": {"name": "adamw", "lr": 0.002},
    "rmsprop": {"name": "rmsprop", "lr": 0.001, "momentum": 0.5},
}
VALUES = st.sampled_from([0.1, 0.3, 0.5, 0.9, 0.97, 0.7071, 0.123456789])


@st.composite
def schedule_options(draw: st.DrawFn, updates: int, epochs: int, decisive_plateau: bool = False) -> dict[str, Any]:
    """One schedule section for a run of `updates` optimizer updates over `epochs` epochs.

    decisive_plateau: thresholds no float32 metric can sit near (0.5 relative: every epoch is bad),
    so both backends of a real run cut at the same epochs and their rates can be compared exactly."""
    name = draw(st.sampled_from(SCHEDULES))
    options: dict[str, Any] = {"name": name}
    if name in ("step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle"):
        options["interval"] = draw(st.sampled_from([None, "step", "epoch"]))
    per_step = options.get("interval") == "step" or (
        options.get("interval") is None and name in ("warmup_cosine", "onecycle")
    )
    run_length = updates if per_step else epochs
    if name == "step":
        options.update(step_size=draw(st.integers(1, max(1, run_length))), gamma=draw(VALUES))
    elif name == "multistep":
        options.update(milestones=draw(st.lists(st.integers(0, run_length + 2), max_size=5)), gamma=draw(VALUES))
    elif name == "exponential":
        options.update(gamma=draw(st.sampled_from([0.9, 0.95, 0.99, 0.999, 0.9876])))
    elif name == "cosine":
        options.update(eta_min=draw(st.sampled_from([0.0, 1e-5, 1e-4])))
        if draw(st.booleans()):  # a T_max shorter than the run: torch's cosine rises again
            options["T_max"] = draw(st.integers(1, run_length + 5))
    elif name == "warmup_cosine":
        total = draw(st.one_of(st.none(), st.integers(run_length, run_length + 20)))
        horizon = total if total is not None else run_length
        assume(horizon >= 2)
        options.update(
            warmup=draw(st.integers(0, horizon - 1)),
            start_factor=draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0])),
            eta_min=draw(st.sampled_from([0.0, 1e-6, 1e-5])),
            total_steps=total,
        )
    elif name == "onecycle":
        options.update(
            total_steps=draw(st.one_of(st.none(), st.integers(run_length, run_length + 20))),
            pct_start=draw(st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.45, 0.6, 0.95])),
            three_phase=draw(st.booleans()),
            anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
            div_factor=draw(st.sampled_from([25.0, 10.0, 3.0])),
            final_div_factor=draw(st.sampled_from([1e4, 100.0, 1e6])),
            cycle_momentum=draw(st.booleans()),
            base_momentum=draw(st.sampled_from([0.85, 0.8])),
            max_momentum=draw(st.sampled_from([0.95, 0.99])),
        )
        if draw(st.booleans()):
            options["max_lr"] = draw(st.sampled_from([0.01, 0.004]))
    elif name == "plateau":
        options.update(
            patience=draw(st.integers(0, 2)),
            factor=draw(st.sampled_from([0.5, 0.1, 0.3])),
            threshold=0.5 if decisive_plateau else draw(st.sampled_from([1e-4, 0.1, 0.5])),
            cooldown=draw(st.integers(0, 1)),
            min_lr=draw(st.sampled_from([0.0, 1e-4])),
        )
    return options


@st.composite
def run_configs(
    draw: st.DrawFn, precisions: tuple[str, ...] = ("fp32",), decisive_plateau: bool = False
) -> dict[str, Any]:
    """A whole float32 (or mixed) training config with a generated schedule, valid as drawn."""
    epochs = draw(st.integers(1, 6))
    batch_size = draw(st.sampled_from([16, 24, 32]))
    samples = draw(st.integers(3, 15)) * batch_size + draw(st.sampled_from([0, 5, 9]))
    assume((samples - round(samples * 0.2)) % batch_size != 1)  # BatchNorm cannot take a batch of one
    accumulation = draw(st.sampled_from([1, 2, 3]))
    optimizer = dict(OPTIMIZERS[draw(st.sampled_from(sorted(OPTIMIZERS)))])
    raw = {
        "seed": draw(st.integers(0, 3)),
        "data": {"name": "intrusion", "num_samples": samples, "batch_size": batch_size, "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
        "loss": {"name": "cross_entropy"},
        "optimizer": optimizer,
        "train": {
            "epochs": epochs,
            "accumulation_steps": accumulation,
            "precision": draw(st.sampled_from(precisions)),
            "log_every": 0,
            "verbose": 0,
        },
    }
    if draw(st.booleans()):
        raw["train"]["max_steps"] = draw(st.integers(1, 60))
    probe = config_from_dict({**raw, "schedule": {"name": "none"}})
    plan = plan_schedule(probe, _train_rows(probe))
    raw["schedule"] = draw(schedule_options(plan.total_updates, plan.epochs, decisive_plateau))
    try:
        config = config_from_dict(raw)
        plan_schedule(config, _train_rows(config))
    except ConfigError:  # e.g. a OneCycle phase of length zero, which torch divides by
        assume(False)
    return raw


def _train_rows(config: Any) -> int:
    from loopspec.data import load_dataset

    return len(load_dataset(config.data).y_train)
