"""Each backend's learning rate (and momentum) over a run, computed the way training uses it.

torch: the scheduler from torchloop stepped after each update (or epoch) on a dummy
optimizer; JAX: flaxloop's schedules evaluated at optax's int32 update counts (per step) or at the
epoch count (per epoch, set by the training loop), and its ReduceLROnPlateau stepped by the
same metric stream.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.optim import lr_scheduler

from flaxloop.schedules import ReduceLROnPlateau, schedule_value
from flaxloop.schedules import make_schedule as make_jax_schedule
from loopspec.config import ScheduleConfig
from loopspec.schedules import SchedulePlan
from torchloop.schedules import current_momentum
from torchloop.schedules import make_schedule as make_torch_schedule

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def torch_values(
    cfg: ScheduleConfig,
    optimizer: str,
    base_lr: float,
    plan: SchedulePlan,
    length: int,
    metrics: Optional[Sequence[float]] = None,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """lr and momentum before each of plan.total_updates optimizer steps."""
    opt = OPTIMIZERS[optimizer]([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_torch_schedule(cfg, opt, length)
    lrs, momenta = [], []
    for update in range(plan.total_updates):
        lrs.append(opt.param_groups[0]["lr"])
        momenta.append(current_momentum(opt))
        opt.step()
        end_of_epoch = (update + 1) % plan.updates_per_epoch == 0
        if scheduler is None:
            continue
        if cfg.name == "plateau":
            if end_of_epoch:
                assert metrics is not None  # a plateau schedule steps on the monitored values
                plateau = cast(lr_scheduler.ReduceLROnPlateau, scheduler)  # make_schedule's for plateau
                plateau.step(metrics[(update + 1) // plan.updates_per_epoch - 1])
        elif plan.interval == "step" or end_of_epoch:
            scheduler.step()
    cycled = cfg.name == "onecycle" and cfg.cycle_momentum
    return np.asarray(lrs, dtype=np.float64), np.asarray(momenta, dtype=np.float64) if cycled else None


def jax_values(
    cfg: ScheduleConfig,
    base_lr: float,
    plan: SchedulePlan,
    length: int,
    metrics: Optional[Sequence[float]] = None,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The same, as flaxloop's optimizer state holds them in a run whose weights are `dtype`: the
    per-step tables read at optax's int32 update counts, or the per-epoch (plateau) values the
    training loop stores after each validation."""
    if cfg.name == "plateau":
        plateau, lrs = ReduceLROnPlateau(cfg, base_lr), []
        for epoch in range(plan.epochs):
            lrs += [plateau.lr] * plan.updates_per_epoch
            assert metrics is not None  # a plateau schedule steps on the monitored values
            plateau.step(metrics[epoch])
        return np.asarray(lrs[: plan.total_updates], dtype=dtype).astype(np.float64), None
    with jax.enable_x64(np.dtype(dtype) == np.float64):
        if plan.interval == "epoch":  # the training loop sets each epoch's values after its validation
            values = [
                schedule_value(cfg, length, base_lr, update // plan.updates_per_epoch)
                for update in range(plan.total_updates)
            ]
            epoch_lrs, momenta = zip(*values)
            stored = lambda v: np.asarray(v, dtype=dtype).astype(np.float64)  # noqa: E731
            return stored(epoch_lrs), None if momenta[0] is None else stored(momenta)
        lr, momentum = make_jax_schedule(cfg, plan, length, base_lr, dtype)
        counts = jnp.arange(plan.total_updates, dtype=jnp.int32)  # optax's update counter
        read = lambda schedule: np.broadcast_to(  # noqa: E731
            np.asarray(schedule(counts) if callable(schedule) else np.asarray(schedule, dtype), dtype=np.float64),
            counts.shape,
        )
        return read(lr), None if momentum is None else read(momentum)


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
