"""torch.optim optimizers built from the config, with torch's own defaults."""

from __future__ import annotations

from typing import Iterable

import torch

from loopspec.config import OptimizerConfig, resolved_eps, resolved_weight_decay


def make_optimizer(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    weight_decay, eps = resolved_weight_decay(cfg), resolved_eps(cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            dampening=cfg.dampening,
            weight_decay=weight_decay,
            nesterov=cfg.nesterov,
        )
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=eps, weight_decay=weight_decay, amsgrad=cfg.amsgrad)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=cfg.momentum,
            centered=cfg.centered,
        )
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(
            params,
            lr=cfg.lr,
            lr_decay=cfg.lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=cfg.initial_accumulator_value,
            eps=eps,
        )
    raise ValueError(f"unknown optimizer {cfg.name}")
