"""Losses as nn.Modules called as loss(logits, labels) with integer class ids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loopspec.config import LossConfig


class BinaryTargets(nn.Module):
    """Feeds 0/1 class ids to a one-logit loss as float targets of shape (N, 1)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, labels.to(logits.dtype).unsqueeze(1))


class OneHotTargets(nn.Module):
    """Regression losses (MSE, L1) on classification data compare logits with one-hot targets."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


class SigmoidFocalLoss(nn.Module):
    """torchvision.ops.sigmoid_focal_loss with mean reduction (torchvision is not a dependency)."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return loss.mean()


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss: mean of -w[y] (1 - p_y)^gamma log p_y."""

    weight: torch.Tensor | None  # a registered buffer

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is not None:
            loss = loss * self.weight[labels]
        return loss.mean()


class TokenLevel(nn.Module):
    """Logits (N, T, V) and labels (N, T) as N*T rows, the mean over every token (nanoGPT's
    F.cross_entropy(logits.view(-1, V), targets.view(-1))); (N, C) logits pass as they are."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.dim() > 2:
            logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        return self.loss(logits, labels)


def make_loss(cfg: LossConfig, num_classes: int, out_dim: int) -> nn.Module:
    return TokenLevel(sample_loss(cfg, out_dim))


def sample_loss(cfg: LossConfig, out_dim: int) -> nn.Module:
    """The loss over (N, C) logits and (N,) class ids."""
    weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float64)
    if cfg.name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if cfg.name == "bce":
        pos_weight = None if cfg.pos_weight is None else torch.tensor([cfg.pos_weight], dtype=torch.float64)
        return BinaryTargets(nn.BCEWithLogitsLoss(pos_weight=pos_weight))
    if cfg.name == "focal":
        if out_dim == 1:
            return BinaryTargets(SigmoidFocalLoss(cfg.alpha, cfg.gamma))
        return SoftmaxFocalLoss(cfg.gamma, weight)
    if cfg.name in ("mse", "l1"):
        loss = nn.MSELoss() if cfg.name == "mse" else nn.L1Loss()
        return BinaryTargets(loss) if out_dim == 1 else OneHotTargets(loss)
    raise ValueError(f"unknown loss {cfg.name}")
