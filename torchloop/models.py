"""The built-in models as nn.Modules, registered in loopspec.models like any user's pair; their
state_dict names are the canonical weight layout. `build_model` builds any registered or custom
model, `model_tensors` reads its tensors' names and shapes from the module itself."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from loopspec.config import ModelConfig
from loopspec.errors import UserError
from loopspec.models import import_object, model_entry
from torchloop.layers import ParityDropout


class MLPBlock(nn.Module):
    def __init__(self, fan_in: int, width: int, dropout: float, bn_momentum: float, bn_eps: float, bias: bool):
        super().__init__()
        self.linear = nn.Linear(fan_in, width, bias=bias)
        self.norm = nn.BatchNorm1d(width, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.dropout = ParityDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        return self.classifier(x.flatten(1))


def tabular_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return TabularMLP(
        math.prod(input_shape),
        cfg.hidden,
        out_dim,
        cfg.dropout,
        cfg.batchnorm_momentum,
        cfg.batchnorm_eps,
        cfg.bias_before_norm,
    )


def fashion_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return FashionMLP(math.prod(input_shape), out_dim)


def batchnorm_cnn(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return BatchNormCNN(
        input_shape, cfg.channels, out_dim, cfg.batchnorm_momentum, cfg.batchnorm_eps, cfg.bias_before_norm
    )


def build_model(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, model: Any = None) -> nn.Module:
    """The module the config names: a built-in's registered builder; a custom pair's `model.torch`
    factory called with `model.kwargs`; or `model`, a module passed to fit(model=...) as it is."""
    entry = model_entry(cfg)
    if model is None and entry.torch is None:
        raise UserError("model custom needs model.torch ('pkg.module:factory') or a module passed as fit(model=...)")
    if model is None:
        factory = import_object(entry.torch, "model.torch")
        args = (cfg, tuple(input_shape), out_dim) if entry.builtin else ()
        try:
            model = factory(*args, **({} if entry.builtin else cfg.kwargs))
        except Exception as err:  # noqa: BLE001 - a user's factory failing is reported in one line
            raise UserError(f"model.torch {entry.torch!r} failed: {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"the torch model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def model_tensors(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of the module's state_dict: the canonical layout."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def weight_shapes(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    out_dim: int,
    model: Any = None,
    reference: Any = None,
    integer_inputs: bool = False,
) -> dict[str, tuple[int, ...]]:
    """The tensors of the model the config names (or of `model`), read from its state_dict."""
    return model_tensors(build_model(cfg, input_shape, out_dim, model))
