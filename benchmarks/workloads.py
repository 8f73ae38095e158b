"""What the throughput benchmark runs: one config per model, its FLOPs, and its batches.

Shared by both backends' benchmark processes; imports neither torch nor jax.
"""

from __future__ import annotations

from typing import Any

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
}


def workload_config(model: str, batch_size: int, precision: str, device: str) -> Config:
    raw = {key: dict(value) for key, value in WORKLOADS[model].items()}
    raw["data"]["batch_size"] = batch_size
    raw["train"] = {"precision": precision, "device": device, "log_every": 0}
    return config_from_dict(raw)


def workload_batches(config: Config, count: int) -> tuple[np.ndarray, np.ndarray, int, tuple[int, ...]]:
    """`count` training batches stacked (count, batch, ...), float32 inputs; plus out_dim, input shape."""
    data = load_dataset(config.data)
    batch = config.data.batch_size
    rows = np.arange(count * batch) % len(data.y_train)
    x = data.x_train[rows].astype(np.float32).reshape(count, batch, *data.input_shape)
    y = data.y_train[rows].reshape(count, batch)
    return x, y, output_dim(config.loss.name, data.num_classes), data.input_shape


def step_flops(config: Config, input_shape: tuple[int, ...], out_dim: int) -> float:
    """Multiply-add FLOPs of one training step: 2 per MAC, forward + backward = 3x forward,
    counting matmuls and convolutions only (what runs on the matrix units)."""
    batch = config.data.batch_size
    model = config.model
    forward = 0.0
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
