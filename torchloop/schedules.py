"""Learning-rate schedules: the classes in torch.optim.lr_scheduler, built from the config."""

from __future__ import annotations

from typing import Optional

import torch
from torch.optim import lr_scheduler

from loopspec.config import ScheduleConfig, monitor_mode
from loopspec.schedules import warmup_cosine_factor


def make_schedule(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, length: int
) -> Optional[lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau]:
    """The torch scheduler for cfg.name (None for `none`); `length` is T_max or total_steps."""
    base_lr = optimizer.param_groups[0]["lr"]
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "multistep":
        return lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    if cfg.name == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    if cfg.name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=length, eta_min=cfg.eta_min)
    if cfg.name == "warmup_cosine":
        floor = cfg.eta_min / base_lr
        return lr_scheduler.LambdaLR(
            optimizer, lambda t: warmup_cosine_factor(t, cfg.warmup, length, cfg.start_factor, floor)
        )
    if cfg.name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.max_lr if cfg.max_lr is not None else base_lr,
            total_steps=length,
            pct_start=cfg.pct_start,
            anneal_strategy=cfg.anneal_strategy,
            cycle_momentum=cfg.cycle_momentum,
            base_momentum=cfg.base_momentum,
            max_momentum=cfg.max_momentum,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            three_phase=cfg.three_phase,
        )
    if cfg.name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=monitor_mode(cfg.mode, cfg.monitor),
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.threshold,
            threshold_mode=cfg.threshold_mode,
            cooldown=cfg.cooldown,
            min_lr=cfg.min_lr,
        )
    raise ValueError(f"unknown schedule {cfg.name}")


def current_momentum(optimizer: torch.optim.Optimizer) -> Optional[float]:
    """SGD/RMSprop momentum or Adam beta1 (what OneCycleLR cycles); None for Adagrad."""
    group = optimizer.param_groups[0]
    return group["betas"][0] if "betas" in group else group.get("momentum")
