"""How long a schedule runs, in the one unit both backends count: applied optimizer updates.

A schedule advances once per optimizer update (interval `step`) or once per epoch
(interval `epoch`). Its length is derived from epochs, batches per epoch and max_steps;
a config whose explicit length is too short is rejected here, before training, with
the numbers, instead of torch's "Tried to step N times" mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopspec.batching import updates_per_epoch
from loopspec.config import Config, schedule_interval
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
