"""The three models as nn.Modules; state_dict names are the canonical weight layout."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from loopspec.config import ModelConfig


class Dropout(nn.Dropout):
    """nn.Dropout that, given a mask (parity mode), applies it instead of drawing one."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None or not self.training:
            return super().forward(x)
        return x * mask


class MLPBlock(nn.Module):
    def __init__(self, fan_in: int, width: int, dropout: float, bn_momentum: float, bn_eps: float, bias: bool):
        super().__init__()
        self.linear = nn.Linear(fan_in, width, bias=bias)
        self.norm = nn.BatchNorm1d(width, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))), mask)


class TabularMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout blocks and a linear head (the intrusion lab)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_dim: int,
        dropout: float,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        bias_before_norm: bool = False,
    ):
        super().__init__()
        widths = [in_features, *hidden]
        self.blocks = nn.ModuleList(
            MLPBlock(fan_in, width, dropout, bn_momentum, bn_eps, bias_before_norm)
            for fan_in, width in zip(widths, widths[1:])
        )
        self.head = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor, dropout_masks: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        x = x.flatten(1)
        for i, block in enumerate(self.blocks):
            x = block(x, None if dropout_masks is None else dropout_masks[i])
        return self.head(x)


class FashionMLP(nn.Module):
    """Flatten, 784-512-512-10 with ReLU: the Fashion-MNIST lab's network, same state_dict names."""

    def __init__(self, in_features: int, out_dim: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(in_features, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, out_dim),
        )

    def forward(self, x: torch.Tensor, dropout_masks: None = None) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, bn_eps: float, bias: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class BatchNormCNN(nn.Module):
    """Three Conv-BatchNorm2d-ReLU-MaxPool blocks and a linear head (the training-loop lab's CNN)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        out_dim: int,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        bias_before_norm: bool = False,
    ):
        super().__init__()
        in_channels, height, width = input_shape
        blocks = []
        for out_channels in channels:
            blocks.append(ConvBlock(in_channels, out_channels, bn_momentum, bn_eps, bias_before_norm))
            in_channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.ModuleList(blocks)
        self.classifier = nn.Linear(in_channels * height * width, out_dim)

    def forward(self, x: torch.Tensor, dropout_masks: None = None) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        return self.classifier(x.flatten(1))


def build_model(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    in_features = 1
    for size in input_shape:
        in_features *= size
    if cfg.name == "mlp":
        return TabularMLP(
            in_features,
            cfg.hidden,
            out_dim,
            cfg.dropout,
            cfg.batchnorm_momentum,
            cfg.batchnorm_eps,
            cfg.bias_before_norm,
        )
    if cfg.name == "fashion_mlp":
        return FashionMLP(in_features, out_dim)
    if cfg.name == "cnn":
        return BatchNormCNN(
            input_shape, cfg.channels, out_dim, cfg.batchnorm_momentum, cfg.batchnorm_eps, cfg.bias_before_norm
        )
    raise ValueError(f"unknown model {cfg.name}")
