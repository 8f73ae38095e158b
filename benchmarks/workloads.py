"""What the throughput benchmark runs: one config per model, its FLOPs, and its batches.

Shared by both backends' benchmark processes; imports neither torch nor jax.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from loopspec.config import Config, config_from_dict
from loopspec.data import load_dataset
from loopspec.models import output_dim

WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": {"name": "intrusion", "num_samples": 8192, "val_fraction": 0.1},
        "model": {"name": "mlp", "hidden": [256, 128], "dropout": 0.0},
        "loss": {"name": "focal"},
        "optimizer": {"name": "adamw", "lr": 1e-3},
    },
    "fashion_mlp": {
        "data": {"name": "synthetic_images", "num_samples": 4096, "channels": 1, "image_size": 28, "val_fraction": 0.1},
        "model": {"name": "fashion_mlp"},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    },
    "cnn": {
        "data": {"name": "synthetic_images", "num_samples": 4096, "channels": 3, "image_size": 32, "val_fraction": 0.1},
        "model": {"name": "cnn", "channels": [32, 64, 128]},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adamw", "lr": 1e-3},
    },
    # nanoGPT's shakespeare_char shape, smaller: the shipped text, dropout 0 (the fused attention kernels)
    "gpt": {
        "data": {"name": "text", "block_size": 128, "stride": 16, "val_fraction": 0.1},
        "model": {"name": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1, "decay": "matrices"},
    },
}


def workload_config(model: str, batch_size: int, precision: str, device: str, width: Optional[int] = None) -> Config:
    """`width` (the MLP only, for benchmarks.scaling) sets its hidden layers to [width, width // 2]:
    256, the default, is the workload's own [256, 128]."""
    raw = {key: dict(value) for key, value in WORKLOADS[model].items()}
    raw["data"]["batch_size"] = batch_size
    if width is not None:
        if model != "mlp":
            raise ValueError(f"a width applies to the mlp workload only, not {model}")
        raw["model"]["hidden"] = [width, max(width // 2, 1)]
    raw["train"] = {"precision": precision, "device": device, "log_every": 0}
    return config_from_dict(raw)


def workload_batches(config: Config, count: int) -> tuple[np.ndarray, np.ndarray, int, tuple[int, ...]]:
    """`count` training batches stacked (count, batch, ...), float32 inputs (token ids stay integers);
    plus out_dim, input shape."""
    data = load_dataset(config.data)
    batch = config.data.batch_size
    rows = np.arange(count * batch) % len(data.y_train)
    x = data.x_train[rows]
    x = (x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)).reshape(count, batch, *data.input_shape)
    y = data.y_train[rows].reshape(count, batch, *data.y_train.shape[1:])
    return x, y, output_dim(config.loss.name, data.num_classes), data.input_shape


def step_flops(config: Config, input_shape: tuple[int, ...], out_dim: int) -> float:
    """Multiply-add FLOPs of one training step: 2 per MAC, forward + backward = 3x forward,
    counting matmuls and convolutions only (what runs on the matrix units)."""
    batch = config.data.batch_size
    model = config.model
    forward = 0.0
    if model.name == "gpt":
        return gpt_flops_per_token(config, input_shape, out_dim) * tokens_per_sample(config, input_shape) * batch
    if model.name in ("mlp", "fashion_mlp"):
        widths = [int(np.prod(input_shape)), *(model.hidden if model.name == "mlp" else [512, 512]), out_dim]
        forward = sum(2.0 * a * b for a, b in zip(widths, widths[1:])) * batch
    else:
        channels, height, width = input_shape
        for out_channels in model.channels:
            forward += 2.0 * channels * out_channels * 9 * height * width * batch
            channels, height, width = out_channels, height // 2, width // 2
        forward += 2.0 * channels * height * width * out_dim * batch
    return 3.0 * forward


def tokens_per_sample(config: Config, input_shape: tuple[int, ...]) -> int:
    """Positions a sample trains on: the block of a token model, 1 for a classifier."""
    return input_shape[0] if config.model.name == "gpt" else 1


def gpt_flops_per_token(config: Config, input_shape: tuple[int, ...], vocab: int) -> float:
    """nanoGPT's estimate_mfu: 6 N + 12 L H Q T per token (forward and backward), N the parameters
    without the position table (a tied head counted once), L layers, H heads, Q head size, T block."""
    m = config.model
    (block,) = input_shape
    width = m.n_embd
    per_layer = 12 * width * width + (13 * width if m.bias else 0)  # c_attn, c_proj, c_fc, mlp.c_proj, 2 LayerNorms
    params = vocab * width + m.n_layer * per_layer + (2 * width if m.bias else width)
    if not m.tie_weights:
        params += vocab * width
    return 6.0 * params + 12.0 * m.n_layer * m.n_head * (width // m.n_head) * block
