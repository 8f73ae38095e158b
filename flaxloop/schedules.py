"""Learning-rate (and momentum) schedules with torch.optim.lr_scheduler's values.

Deterministic schedules are optax-style functions of the update count, injected into the
optimizer state by optax.inject_hyperparams, so they live in the jitted step and are
saved with the state. Optax's own functions are used where their arithmetic is torch's
(step, multistep, exponential, warmup-cosine); cosine, OneCycle and ReduceLROnPlateau are
written here because optax's differ (see the docstrings and ../shared/PARITY_FACTS.md).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from loopspec.config import ScheduleConfig, monitor_mode
from loopspec.schedules import SchedulePlan, onecycle_phase_ends

Schedule = Callable[[Any], Any]


def cosine_annealing(base_lr: float, t_max: int, eta_min: float) -> Schedule:
    """CosineAnnealingLR's closed form; torch keeps following the cosine past T_max
    (back up towards base_lr), where optax.cosine_decay_schedule holds the floor."""
    return lambda t: eta_min + (base_lr - eta_min) * (1 + jnp.cos(jnp.pi * t / t_max)) / 2


def onecycle(cfg: ScheduleConfig, total: int, max_lr: float) -> tuple[Schedule, Schedule]:
    """OneCycleLR's learning rate and momentum, phase for phase as torch computes them.

    optax.cosine_onecycle_schedule places the phase boundaries differently (up to 3% of
    max_lr apart) and does not cycle momentum.
    """
    initial_lr = max_lr / cfg.div_factor
    lrs = {"initial": initial_lr, "max": max_lr, "min": initial_lr / cfg.final_div_factor}
    moms = {"max": cfg.max_momentum, "base": cfg.base_momentum}
    if cfg.three_phase:
        lr_path = [("initial", "max"), ("max", "initial"), ("initial", "min")]
        mom_path = [("max", "base"), ("base", "max"), ("max", "max")]
    else:
        lr_path = [("initial", "max"), ("max", "min")]
        mom_path = [("max", "base"), ("base", "max")]
    ends = onecycle_phase_ends(cfg.pct_start, cfg.three_phase, total)
    starts = [0.0] + ends[:-1]

    def anneal(start: float, end: float, pct: Any) -> Any:
        if cfg.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
        return (end - start) * pct + start

    def schedule(path: list[tuple[str, str]], values: dict[str, float]) -> Schedule:
        def value(t: Any) -> Any:
            phase_values = [
                anneal(values[a], values[b], (t - start) / (end - start) if end != start else 0.0)
                for (a, b), start, end in zip(path, starts, ends)
            ]
            result = phase_values[-1]  # torch: the first phase whose end is not passed, else the last
            for end, phase_value in reversed(list(zip(ends[:-1], phase_values[:-1]))):
                result = jnp.where(t <= end, phase_value, result)
            return result

        return value

    return schedule(lr_path, lrs), schedule(mom_path, moms)


def schedule_functions(cfg: ScheduleConfig, length: int, base_lr: float) -> tuple[Schedule, Optional[Schedule]]:
    """torch's learning rate (and OneCycle momentum) as functions of the schedule index: the
    number of applied updates (interval step) or of finished epochs (interval epoch)."""
    if cfg.name in ("none", "plateau"):  # plateau: ReduceLROnPlateau below sets it between epochs
        return (lambda t: jnp.asarray(base_lr, jnp.result_type(float))), None
    if cfg.name == "step":
        return optax.exponential_decay(
            base_lr, transition_steps=cfg.step_size, decay_rate=cfg.gamma, staircase=True
        ), None
    if cfg.name == "multistep":
        counts = collections.Counter(cfg.milestones)  # torch multiplies once per repeat of a milestone
        return optax.piecewise_constant_schedule(base_lr, {m: cfg.gamma**n for m, n in counts.items()}), None
    if cfg.name == "exponential":
        return optax.exponential_decay(base_lr, transition_steps=1, decay_rate=cfg.gamma), None
    if cfg.name == "cosine":
        return cosine_annealing(base_lr, length, cfg.eta_min), None
    if cfg.name == "warmup_cosine":
        if cfg.warmup == 0:
            return optax.cosine_decay_schedule(base_lr, length, alpha=cfg.eta_min / base_lr), None
        return optax.warmup_cosine_decay_schedule(
            base_lr * cfg.start_factor, base_lr, cfg.warmup, length, cfg.eta_min
        ), None
    if cfg.name == "onecycle":
        lr, momentum = onecycle(cfg, length, cfg.max_lr if cfg.max_lr is not None else base_lr)
        return lr, momentum if cfg.cycle_momentum else None
    raise ValueError(f"unknown schedule {cfg.name}")


def make_schedules(
    cfg: ScheduleConfig, plan: SchedulePlan, length: int, base_lr: float
) -> tuple[float | Schedule, Optional[float | Schedule]]:
    """(learning rate, momentum) for optax.inject_hyperparams.

    Per step: schedules of optax's update count, which advances only on applied updates, so a
    skipped update never moves them. Per epoch: the values for epoch 0, which the training loop
    replaces after every validation (schedule_value), skips or not, as torch's scheduler.step().
    optax counts in int32, and JAX divides int32 in float32 even with x64 on, so the count is
    made a float of the run's precision first (float64 in float64 runs).
    """
    lr, momentum = schedule_functions(cfg, length, base_lr)
    if plan.interval == "epoch" or cfg.name in ("none", "plateau"):
        return schedule_value(cfg, length, base_lr, 0)

    def per_update(schedule: Schedule) -> Schedule:
        return lambda count: schedule(jnp.asarray(count, dtype=jnp.result_type(float)))

    return per_update(lr), None if momentum is None else per_update(momentum)


def schedule_value(cfg: ScheduleConfig, length: int, base_lr: float, index: int) -> tuple[float, Optional[float]]:
    """A schedule's learning rate (and momentum) at `index` (epochs done, or applied updates for a
    per-step schedule), evaluated on the host in float64 as torch does, so a float32 run rounds it
    once, when it is stored."""
    with jax.enable_x64(True):
        lr, momentum = schedule_functions(cfg, length, base_lr)
        index = jnp.asarray(index, dtype=jnp.float64)
        return float(lr(index)), None if momentum is None else float(momentum(index))


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
