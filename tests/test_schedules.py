"""Schedule values: the JAX side's learning rate (and OneCycle momentum) is torch's scheduler's, step
for step over the whole run: the same double in float64, that double rounded once in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings

from flaxloop.schedules import ReduceLROnPlateau as JaxPlateau
from loopspec.config import ConfigError, ScheduleConfig, config_from_dict
from loopspec.data import load_dataset
from loopspec.schedules import SchedulePlan, plan_schedule, schedule_horizon, torch_schedule_values
from parity_tests.schedule_configs import FULL, run_configs
from paritykit.schedule_values import OPTIMIZERS, jax_values, torch_values
from paritykit.sensitivity import ulps_apart
from torchloop.schedules import make_schedule

RTOL = 1e-12
BASE_LR = 0.1

# (schedule options, optimizer, run length in intervals)
CASES = {
    "step-size-not-dividing": ({"name": "step", "step_size": 3, "gamma": 0.5}, "sgd", 20),
    "step-long": ({"name": "step", "step_size": 7, "gamma": 0.9}, "sgd", 300),
    "multistep-repeated-milestone": ({"name": "multistep", "milestones": [2, 5, 5, 9], "gamma": 0.3}, "sgd", 15),
    "multistep-milestone-0": ({"name": "multistep", "milestones": [0, 4], "gamma": 0.5}, "sgd", 8),
    "exponential": ({"name": "exponential", "gamma": 0.97}, "sgd", 500),
    "cosine": ({"name": "cosine"}, "sgd", 200),
    "cosine-floor": ({"name": "cosine", "eta_min": 1e-4}, "sgd", 1000),
    "cosine-short-T_max-rises-again": ({"name": "cosine", "T_max": 30, "eta_min": 1e-3}, "sgd", 100),
    "cosine-T_max-1": ({"name": "cosine", "T_max": 1}, "sgd", 5),
    "warmup_cosine-no-warmup": ({"name": "warmup_cosine", "warmup": 0}, "adamw", 50),
    "warmup_cosine": ({"name": "warmup_cosine", "warmup": 10, "start_factor": 0.0}, "adamw", 100),
    "warmup_cosine-start-and-floor": (
        {"name": "warmup_cosine", "warmup": 7, "start_factor": 0.1, "eta_min": 1e-3},
        "adamw",
        63,
    ),
    "warmup_cosine-longer-total": ({"name": "warmup_cosine", "warmup": 3, "total_steps": 40}, "adamw", 30),
    "onecycle-sgd": ({"name": "onecycle"}, "sgd", 100),
    "onecycle-adam-beta1": ({"name": "onecycle", "max_lr": 0.01}, "adam", 250),
    "onecycle-pct-0": ({"name": "onecycle", "pct_start": 0.0}, "sgd", 50),
    "onecycle-pct-0.99": ({"name": "onecycle", "pct_start": 0.99}, "sgd", 50),
    "onecycle-pct-tiny": ({"name": "onecycle", "pct_start": 0.01}, "adamw", 50),
    "onecycle-three-phase": ({"name": "onecycle", "three_phase": True}, "sgd", 101),
    "onecycle-three-phase-linear": (
        {"name": "onecycle", "three_phase": True, "anneal_strategy": "linear", "pct_start": 0.4},
        "rmsprop",
        77,
    ),
    "onecycle-linear": (
        {"name": "onecycle", "anneal_strategy": "linear", "div_factor": 10, "final_div_factor": 100},
        "adamw",
        64,
    ),
    "onecycle-momentum-bounds": ({"name": "onecycle", "base_momentum": 0.8, "max_momentum": 0.99}, "sgd", 40),
    "onecycle-no-momentum-cycling": ({"name": "onecycle", "cycle_momentum": False}, "adagrad", 30),
    "onecycle-longer-total": ({"name": "onecycle", "total_steps": 60}, "sgd", 45),
    "onecycle-short": ({"name": "onecycle"}, "sgd", 7),
}


def torch_optimizer(name: str) -> torch.optim.Optimizer:
    return OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))], lr=BASE_LR)


def assert_sequences_equal(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.maximum(np.abs(expected), 1e-300)
    worst = int(np.argmax(np.abs(got - expected) / scale))
    assert np.all(np.abs(got - expected) <= RTOL * scale), (
        f"{what} differs first at step {int(np.argmax(np.abs(got - expected) > RTOL * scale))}; "
        f"worst step {worst}: jax {got[worst]!r} torch {expected[worst]!r}"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_per_step_sequence_matches_torch(case: str) -> None:
    options, optimizer_name, length = CASES[case]
    cfg = ScheduleConfig(**options)
    run_steps = length  # interval step, one update per interval
    explicit = options.get("T_max", options.get("total_steps"))
    plan = SchedulePlan(cfg.name, "step", 1, run_steps, run_steps)
    sched_length = explicit if explicit is not None else plan.run_length
    lrs, momenta = torch_values(cfg, optimizer_name, BASE_LR, plan, sched_length)
    got_lrs, got_momenta = jax_values(cfg, BASE_LR, plan, sched_length)
    assert_sequences_equal(got_lrs, lrs, "learning rate")
    if cfg.name == "onecycle" and cfg.cycle_momentum:
        assert got_momenta is not None
        assert_sequences_equal(got_momenta, momenta, "momentum")
        assert max(momenta) > min(momenta)
    else:
        assert got_momenta is None and momenta is None
    assert len(set(lrs)) > 1 or case == "cosine-T_max-1"  # the schedule really changes the rate


@pytest.mark.parametrize("name", ["step", "cosine", "onecycle", "warmup_cosine"])
def test_epoch_interval_holds_the_rate_for_a_whole_epoch(name: str) -> None:
    options = {
        "name": name,
        "interval": "epoch",
        **({"warmup": 2} if name == "warmup_cosine" else {}),
        **({"step_size": 2} if name == "step" else {}),
    }
    cfg = ScheduleConfig(**options)
    epochs, per_epoch = 9, 5
    plan = SchedulePlan(cfg.name, "epoch", per_epoch, epochs * per_epoch, epochs)
    expected, _ = torch_values(cfg, "sgd", BASE_LR, plan, plan.run_length)
    got, _ = jax_values(cfg, BASE_LR, plan, plan.run_length)
    assert_sequences_equal(got, expected, "learning rate")
    assert all(len(set(expected[e * per_epoch : (e + 1) * per_epoch])) == 1 for e in range(epochs))
    assert len(set(expected)) == epochs or name == "step"


METRIC_STREAMS = {
    "falls-then-flat": [1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69999, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
    "noisy": list(np.round(np.random.default_rng(0).normal(1.0, 0.05, 60), 4)),
    "rising": [0.5, 0.6, 0.7, 0.65, 0.7, 0.71, 0.7, 0.7, 0.7, 0.7, 0.72, 0.72, 0.72, 0.72, 0.72],
    # Steps of 1.5x and 0.5x the default relative threshold (1e-4) and of the abs threshold
    # (0.01): which side of the threshold each lands on decides every reduction.
    "near-rel-threshold-down": list(np.cumprod([1.0] + [1 - 1.5e-4] * 6 + [1 - 0.5e-4] * 6 + [1 - 1.5e-4] * 6)),
    "near-rel-threshold-up": list(np.cumprod([0.5] + [1 + 1.5e-4] * 6 + [1 + 0.5e-4] * 6 + [1 + 1.5e-4] * 6)),
    "near-abs-threshold": [1.0, 0.985, 0.97, 0.955, 0.95, 0.945, 0.94, 0.925, 0.91, 0.905, 0.9, 0.895, 0.89],
}
PLATEAU_OPTIONS = {
    "default-ish": {"patience": 2},
    "abs-threshold": {"patience": 1, "threshold_mode": "abs", "threshold": 0.01},
    "cooldown": {"patience": 1, "cooldown": 2, "factor": 0.5},
    "min_lr": {"patience": 0, "factor": 0.3, "min_lr": 0.004},
    "max-mode": {"patience": 1, "mode": "max", "monitor": "val_acc"},
    "max-abs": {"patience": 2, "mode": "max", "threshold_mode": "abs", "threshold": 0.005, "monitor": "val_f1"},
}


@pytest.mark.parametrize("stream", list(METRIC_STREAMS))
@pytest.mark.parametrize("options", list(PLATEAU_OPTIONS))
def test_plateau_matches_torch(stream: str, options: str) -> None:
    cfg = ScheduleConfig(name="plateau", **PLATEAU_OPTIONS[options])
    optimizer = torch_optimizer("sgd")
    scheduler = make_schedule(cfg, optimizer, 0)
    ours = JaxPlateau(cfg, BASE_LR)
    for epoch, metric in enumerate(METRIC_STREAMS[stream]):
        scheduler.step(metric)
        assert ours.step(metric) == optimizer.param_groups[0]["lr"], f"epoch {epoch}"


def test_plan_derives_lengths_and_rejects_running_past_the_end() -> None:
    base = {
        "data": {"name": "intrusion", "num_samples": 1000, "batch_size": 100, "val_fraction": 0.2},
        "train": {"epochs": 3},
    }
    plan = plan_schedule(config_from_dict({**base, "schedule": {"name": "onecycle"}}), 800)
    assert (plan.interval, plan.updates_per_epoch, plan.total_updates, plan.run_length) == ("step", 8, 24, 24)
    epoch_plan = plan_schedule(config_from_dict({**base, "schedule": {"name": "cosine"}}), 800)
    assert (epoch_plan.interval, epoch_plan.run_length) == ("epoch", 3)
    capped = plan_schedule(
        config_from_dict({**base, "train": {"epochs": 3, "max_steps": 10}, "schedule": {"name": "onecycle"}}), 800
    )
    assert capped.run_length == 10
    with pytest.raises(ConfigError) as info:
        plan_schedule(config_from_dict({**base, "schedule": {"name": "onecycle", "total_steps": 20}}), 800)
    assert str(info.value).startswith(
        "schedule.total_steps is 20 but the run takes 24 optimizer steps (3 epochs x 8 steps per epoch)"
    )
    with pytest.raises(ConfigError, match="schedule.warmup is 24 steps but the schedule lasts 24 steps"):
        plan_schedule(config_from_dict({**base, "schedule": {"name": "warmup_cosine", "warmup": 24}}), 800)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"name": "onecycle", "pct_start": 0.5}, "puts step 0 in phase 1 of length zero"),  # 0.5 * 2 steps - 1 == 0
        ({"name": "onecycle", "pct_start": 1.0}, "schedule.pct_start must be in [0, 1)"),
        ({"name": "plateau", "interval": "step"}, "schedule.interval must be epoch"),
        (
            {"name": "cosine", "pct_start": 0.2},
            "schedule.pct_start does not apply to schedule 'cosine'; it applies to: onecycle",
        ),
        ({"name": "cyclic"}, "unknown schedule (schedule.name) 'cyclic'; allowed: none, step, multistep"),
    ],
)
def test_schedule_config_errors(options: dict, message: str) -> None:
    raw = {
        "data": {"name": "intrusion", "num_samples": 100, "batch_size": 40, "val_fraction": 0.2},
        "train": {"epochs": 1},
        "schedule": options,
    }
    with pytest.raises(ConfigError) as info:
        plan_schedule(config_from_dict(raw), 80)
    assert message in str(info.value)


def test_cycle_momentum_needs_momentum() -> None:
    with pytest.raises(ConfigError, match="adagrad has neither"):
        config_from_dict({"optimizer": {"name": "adagrad"}, "schedule": {"name": "onecycle"}})


# ------------------------------------------------------------------ generated configs
def generated_plan(raw: dict) -> tuple:
    config = config_from_dict(raw)
    plan = plan_schedule(config, len(load_dataset(config.data).y_train))
    return config, plan, schedule_horizon(config, plan)


def plateau_metrics(plan: SchedulePlan) -> list[float]:
    return list(np.random.default_rng(plan.total_updates).normal(1.0, 0.05, plan.epochs + 1))


@settings(max_examples=300 if FULL else 60)
@given(raw=run_configs())
def test_generated_schedules_replay_torch_bit_for_bit(raw: dict) -> None:
    """loopspec's replay of torch's scheduler arithmetic gives torch's doubles, recurrences included."""
    config, plan, horizon = generated_plan(raw)
    cfg = config.schedule
    assume(cfg.name != "plateau")
    lrs, momenta = torch_values(cfg, config.optimizer.name, config.optimizer.lr, plan, horizon)
    steps = plan.total_updates if plan.interval == "step" else plan.epochs
    replay_lrs, replay_momenta = torch_schedule_values(cfg, horizon, config.optimizer.lr, steps)
    per_interval = lrs if plan.interval == "step" else lrs[:: plan.updates_per_epoch]
    assert replay_lrs == list(per_interval)
    if momenta is not None:
        assert replay_momenta == list(momenta if plan.interval == "step" else momenta[:: plan.updates_per_epoch])


@settings(max_examples=300 if FULL else 60)
@given(raw=run_configs())
def test_generated_schedules_are_torch_values_rounded_once(raw: dict) -> None:
    """The rate and momentum the JAX optimizer state holds: torch's double rounded once to the weights'
    dtype at every update (0.5 ulp in float32; equal in float64)."""
    config, plan, horizon = generated_plan(raw)
    cfg, metrics = config.schedule, plateau_metrics(plan)
    lrs, momenta = torch_values(cfg, config.optimizer.name, config.optimizer.lr, plan, horizon, metrics)
    for dtype in (np.float32, np.float64):
        got_lrs, got_momenta = jax_values(cfg, config.optimizer.lr, plan, horizon, metrics, dtype=dtype)
        assert (got_momenta is None) == (momenta is None)
        for got, expected, what in ((got_lrs, lrs, "lr"), (got_momenta, momenta, "momentum")):
            if expected is None:
                continue
            if dtype == np.float64:
                assert list(got) == list(expected), what
            else:
                ulps = ulps_apart(got, expected)
                assert ulps.max() <= 0.5, f"{what} {ulps.max():.2f} ulp off at update {int(ulps.argmax())}"
