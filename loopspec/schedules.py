"""How long a schedule runs, in the one unit both backends count: applied optimizer updates.

A schedule advances once per optimizer update (interval `step`) or once per epoch
(interval `epoch`). Its length is derived from epochs, batches per epoch and max_steps;
a config whose explicit length is too short is rejected here, before training, with
the numbers, instead of torch's "Tried to step N times" mid-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from loopspec.batching import updates_per_epoch
from loopspec.config import Config, ScheduleConfig, schedule_interval
from loopspec.errors import ConfigError


@dataclass(frozen=True)
class SchedulePlan:
    name: str
    interval: str  # "step" or "epoch"
    updates_per_epoch: int
    total_updates: int  # optimizer updates the run will make if it does not stop early
    epochs: int  # epochs the run will start

    @property
    def cut_by_max_steps(self) -> bool:
        return self.total_updates < self.epochs * self.updates_per_epoch

    @property
    def run_length(self) -> int:
        """How many of the schedule's intervals (updates or epochs) the run lasts."""
        return self.total_updates if self.interval == "step" else self.epochs

    def describe(self) -> str:
        if self.interval == "step":
            return (
                f"{self.total_updates} optimizer steps ({self.epochs} epochs x {self.updates_per_epoch} "
                f"steps per epoch{', cut by train.max_steps' if self.cut_by_max_steps else ''})"
            )
        return f"{self.epochs} epochs"


def plan_schedule(config: Config, num_train: int) -> SchedulePlan:
    sched, train = config.schedule, config.train
    per_epoch = updates_per_epoch(num_train, config.data.batch_size, config.data.drop_last, train.accumulation_steps)
    total = train.epochs * per_epoch if train.max_steps is None else min(train.epochs * per_epoch, train.max_steps)
    epochs = -(-total // per_epoch)
    plan = SchedulePlan(sched.name, schedule_interval(sched), per_epoch, total, epochs)
    unit = "steps" if plan.interval == "step" else "epochs"
    if (
        sched.name in ("onecycle", "warmup_cosine")
        and sched.total_steps is not None
        and sched.total_steps < plan.run_length
    ):
        raise ConfigError(
            f"schedule.total_steps is {sched.total_steps} but the run takes {plan.describe()}; the {sched.name} "
            f"schedule would run past its end. Raise schedule.total_steps to {plan.run_length} "
            "or leave it null to derive it"
        )
    horizon = schedule_horizon(config, plan)
    if sched.name == "warmup_cosine" and sched.warmup >= horizon:
        raise ConfigError(
            f"schedule.warmup is {sched.warmup} {unit} but the schedule lasts {horizon} {unit}; "
            "the warm-up must end before the schedule does"
        )
    if sched.name == "onecycle":
        check_onecycle_phases(sched.pct_start, sched.three_phase, horizon)
    return plan


def schedule_horizon(config: Config, plan: SchedulePlan) -> int:
    """How many intervals the schedule's shape spans: T_max for cosine, total_steps for onecycle and
    warmup_cosine; explicit, or the run's length. (Cosine past T_max rises again, as torch's does.)"""
    sched = config.schedule
    explicit = sched.T_max if sched.name == "cosine" else sched.total_steps
    return explicit if explicit is not None else plan.run_length


def onecycle_phase_ends(pct_start: float, three_phase: bool, total: int) -> list[float]:
    """The last step of each phase, computed as torch's OneCycleLR does."""
    if three_phase:
        return [float(pct_start * total) - 1, float(2 * pct_start * total) - 2, total - 1]
    return [float(pct_start * total) - 1, total - 1]


def check_onecycle_phases(pct_start: float, three_phase: bool, total: int) -> None:
    """Reject what torch's OneCycleLR would divide by zero on: a step that lands in a phase of
    length zero, including step `total`, which torch computes after the last update."""
    ends = onecycle_phase_ends(pct_start, three_phase, total)
    candidates = {0, total} | {int(e) + d for e in ends for d in (-1, 0, 1)}
    for step in sorted(c for c in candidates if 0 <= c <= total):
        start = 0.0
        for phase, end in enumerate(ends):
            if step <= end or phase == len(ends) - 1:
                if end - start == 0:
                    raise ConfigError(
                        f"onecycle with pct_start {pct_start}{' and three_phase' if three_phase else ''} over {total} "
                        f"steps puts step {step} in phase {phase + 1} of length zero, where torch's OneCycleLR divides "
                        "by zero; change pct_start or the run length"
                    )
                break
            start = end


# ----------------------------------------------------------------------------- torch's values
# torch.optim.lr_scheduler computes in Python floats, several schedules by recurrence (StepLR,
# MultiStepLR, ExponentialLR and CosineAnnealingLR multiply the previous rate). The functions
# below are that arithmetic operation for operation, so their doubles are torch's bit for bit;
# a float32 run rounds each once (flaxloop's tables), and a resumed torch scheduler continues
# from a saved double exactly. tests/test_schedules.py holds them equal to the stock classes.


def warmup_cosine_factor(t: int, warmup: int, total: int, start_factor: float, floor: float) -> float:
    """LambdaLR multiplier: linear from start_factor to 1 over `warmup`, then cosine to `floor`
    (eta_min / lr) at `total`. The formula optax.warmup_cosine_decay_schedule computes."""
    if t < warmup:
        return start_factor + (1.0 - start_factor) * t / warmup
    progress = min(t - warmup, total - warmup) / (total - warmup)
    return (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)) + floor


def onecycle_anneal(strategy: str, start: float, end: float, pct: float) -> float:
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def onecycle_values(cfg: ScheduleConfig, total: int, max_lr: float, step: int) -> tuple[float, float]:
    """OneCycleLR.get_lr at `step`: (lr, momentum), phase for phase."""
    initial = max_lr / cfg.div_factor
    lrs = {"initial": initial, "max": max_lr, "min": initial / cfg.final_div_factor}
    moms = {"max": cfg.max_momentum, "base": cfg.base_momentum}
    if cfg.three_phase:
        lr_path = [("initial", "max"), ("max", "initial"), ("initial", "min")]
        mom_path = [("max", "base"), ("base", "max"), ("max", "max")]
    else:
        lr_path = [("initial", "max"), ("max", "min")]
        mom_path = [("max", "base"), ("base", "max")]
    ends = onecycle_phase_ends(cfg.pct_start, cfg.three_phase, total)
    start = 0.0
    for phase, end in enumerate(ends):
        if step <= end or phase == len(ends) - 1:
            pct = (step - start) / (end - start)
            (lr_a, lr_b), (mom_a, mom_b) = lr_path[phase], mom_path[phase]
            return (
                onecycle_anneal(cfg.anneal_strategy, lrs[lr_a], lrs[lr_b], pct),
                onecycle_anneal(cfg.anneal_strategy, moms[mom_a], moms[mom_b], pct),
            )
        start = end
    raise AssertionError("unreachable: the last phase takes every step")


def next_recurrent_lr(cfg: ScheduleConfig, horizon: int, base_lr: float, lr: float, t: int) -> float:
    """The rate at index t from the rate at t - 1 (t >= 1; MultiStepLR also at 0), as StepLR,
    MultiStepLR, ExponentialLR and CosineAnnealingLR.get_lr compute it (the cosine past T_max too)."""
    if cfg.name == "step":
        return lr if t % cfg.step_size != 0 else lr * cfg.gamma
    if cfg.name == "multistep":
        repeats = cfg.milestones.count(t)
        return lr * cfg.gamma**repeats if repeats else lr
    if cfg.name == "exponential":
        return lr * cfg.gamma
    if cfg.name == "cosine":
        eta_min, t_max = cfg.eta_min, horizon
        if (t - 1 - t_max) % (2 * t_max) == 0:
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (1 + math.cos(math.pi * t / t_max)) / (1 + math.cos(math.pi * (t - 1) / t_max)) * (
            lr - eta_min
        ) + eta_min
    raise ValueError(f"{cfg.name} is not a recurrent schedule")


def torch_schedule_values(
    cfg: ScheduleConfig, horizon: int, base_lr: float, count: int
) -> tuple[list[float], Optional[list[float]]]:
    """The learning rate (and the momentum or beta1 OneCycle cycles) at schedule indices 0 .. count-1
    (applied updates, or finished epochs), as torch's scheduler leaves them in the optimizer's
    param group: Python doubles. Plateau and none hold optimizer.lr (plateau cuts come from the
    metric, between epochs). `horizon` is T_max or total_steps (loopspec.schedules.schedule_horizon)."""
    if cfg.name == "onecycle":
        max_lr = cfg.max_lr if cfg.max_lr is not None else base_lr
        pairs = [onecycle_values(cfg, horizon, max_lr, t) for t in range(count)]
        lrs, momenta = [lr for lr, _ in pairs], [m for _, m in pairs]
        return lrs, momenta if cfg.cycle_momentum else None
    if cfg.name == "warmup_cosine":
        floor = cfg.eta_min / base_lr
        return [
            base_lr * warmup_cosine_factor(t, cfg.warmup, horizon, cfg.start_factor, floor) for t in range(count)
        ], None
    first = base_lr
    if cfg.name == "multistep" and 0 in cfg.milestones:  # MultiStepLR decays at its initial step too
        first = next_recurrent_lr(cfg, horizon, base_lr, base_lr, 0)
    lrs = [first] * min(count, 1)
    for t in range(1, count):
        lrs.append(lrs[-1] if cfg.name in ("none", "plateau") else next_recurrent_lr(cfg, horizon, base_lr, lrs[-1], t))
    return lrs, None


@dataclass(frozen=True)
class ScheduleValues:
    """torch's doubles at every schedule index of a run (torch_schedule_values)."""

    lrs: list[float]
    momenta: Optional[list[float]]

    def value(self, index: int) -> tuple[float, Optional[float]]:
        """The learning rate (and cycled momentum) at `index`: applied updates, or epochs done."""
        return self.lrs[index], None if self.momenta is None else self.momenta[index]


def schedule_values(config: Config, plan: SchedulePlan, horizon: int) -> ScheduleValues:
    """Every index a run can reach: up to its last update (a per-epoch index is never past it)."""
    return ScheduleValues(*torch_schedule_values(config.schedule, horizon, config.optimizer.lr, plan.total_updates + 1))
