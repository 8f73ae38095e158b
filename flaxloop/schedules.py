"""Learning-rate (and momentum) schedules with torch.optim.lr_scheduler's values, exactly.

A learning rate is a pure function of the update count, so no rounding excuses a difference:
torch computes it in Python doubles (loopspec.schedules.torch_schedule_values replays that
arithmetic), and the optimizer receives it rounded once. A per-step schedule here is a table of
those doubles rounded to the weights' dtype, looked up by optax's update count inside the jitted
step (optax.inject_hyperparams), so it is saved with the state and a skipped update never moves
it. Why a table: the same formulas evaluated in float32 inside the step cancel near the end of a
schedule (OneCycle's lr 1e-4 of its peak came out 8.6e-4 relative off, thousands of ulps), and
a host-side rate passed in each step cannot know of an fp16 skip the loop reads back an update
later. benchmarks/schedule_exactness.py measures the alternatives; docs/parity.md states them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np

from loopspec.config import ScheduleConfig, monitor_mode
from loopspec.schedules import SchedulePlan, torch_schedule_values

Schedule = Callable[[Any], Any]


def schedule_tables(
    cfg: ScheduleConfig, plan: SchedulePlan, length: int, base_lr: float, dtype: Any
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """torch's learning rate (and cycled momentum) before each of the run's updates and after the
    last, each double rounded once to `dtype`."""
    lrs, momenta = torch_schedule_values(cfg, length, base_lr, plan.total_updates + 1)
    as_table = lambda values: np.asarray(values, dtype=np.float64).astype(dtype)  # noqa: E731
    return as_table(lrs), None if momenta is None else as_table(momenta)


def lookup(table: np.ndarray) -> Schedule:
    """A schedule of optax's int32 update count that reads `table` (the last entry past its end)."""
    values = jnp.asarray(table)
    return lambda count: values[jnp.minimum(count, len(table) - 1)]


def make_schedule(
    cfg: ScheduleConfig, plan: SchedulePlan, length: int, base_lr: float, dtype: Any = np.float32
) -> tuple[float | Schedule, Optional[float | Schedule]]:
    """(learning rate, momentum) for optax.inject_hyperparams, in `dtype` (the weights').

    Per step: lookups of optax's update count, which advances only on applied updates. Per epoch
    (and plateau): the values for epoch 0, which the training loop replaces after every validation
    (schedule_value), skips or not, as torch's scheduler.step().
    """
    if plan.interval == "epoch" or cfg.name in ("none", "plateau"):
        return schedule_value(cfg, length, base_lr, 0)
    lr, momentum = schedule_tables(cfg, plan, length, base_lr, dtype)
    return lookup(lr), None if momentum is None else lookup(momentum)


def schedule_value(cfg: ScheduleConfig, length: int, base_lr: float, index: int) -> tuple[float, Optional[float]]:
    """torch's learning rate (and momentum) at `index` (epochs done, or applied updates for a
    per-step schedule) as a double: stored in a float32 state it is rounded once, and saved in a
    checkpoint it is the value a resumed torch scheduler continues from."""
    lrs, momenta = torch_schedule_values(cfg, length, base_lr, index + 1)
    return lrs[-1], None if momenta is None else momenta[-1]


class ReduceLROnPlateau:
    """torch's ReduceLROnPlateau, stepped by the host loop once per epoch with a metric.

    optax.contrib.reduce_on_plateau is a gradient transformation fed a loss on every
    update, with rtol/atol in place of threshold_mode and no cooldown semantics of torch's.
    """

    eps = 1e-8  # torch: reductions smaller than this are ignored

    def __init__(self, cfg: ScheduleConfig, lr: float):
        self.cfg, self.lr = cfg, lr
        self.mode = monitor_mode(cfg.mode, cfg.monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, value: float) -> bool:
        threshold = self.cfg.threshold
        if self.cfg.threshold_mode == "rel":
            return (
                value < self.best * (1.0 - threshold) if self.mode == "min" else value > self.best * (threshold + 1.0)
            )
        return value < self.best - threshold if self.mode == "min" else value > self.best + threshold

    def step(self, metric: float) -> float:
        """Record one epoch's metric; returns the learning rate for the next epoch."""
        if self.is_better(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.cfg.patience:
            new_lr = max(self.lr * self.cfg.factor, self.cfg.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cfg.cooldown
            self.num_bad_epochs = 0
        return self.lr
