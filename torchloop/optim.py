"""torch.optim optimizers built from the config, with torch's own defaults."""

from __future__ import annotations

from typing import Any, Iterable, cast

import torch
from torch import nn

from loopspec.config import OptimizerConfig, resolved_eps, resolved_weight_decay


def decayed_tensors(cfg: OptimizerConfig, model: nn.Module) -> list[dict[str, Any]]:
    """Which tensors weight decay applies to, as torch's parameter groups: one group; or, with
    `decay: matrices`, nanoGPT's two: tensors of 2+ dimensions decay, biases and norms (1-D) do not."""
    params = list(model.parameters())
    if cfg.decay == "all":
        return [{"params": params}]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if p.dim() >= 2]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def make_optimizer(
    cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter] | list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """`params`: the model's parameters, or its parameter groups (decayed_tensors)."""
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
        betas = cast(tuple[float, float], tuple(cfg.betas))  # the schema checks that there are two
        return cls(params, lr=cfg.lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=cfg.amsgrad)
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
