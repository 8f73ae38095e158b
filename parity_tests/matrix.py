"""The model x optimizer x loss combinations the float64 parity suite runs."""

from __future__ import annotations

from typing import Any

# Small data and widths keep 300+ float64 steps per backend fast; each model still runs its
# real architecture (BatchNorm, parity-mode dropout, the 784-512-512 MLP, three conv blocks).
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": {"name": "intrusion", "num_samples": 1600, "batch_size": 64, "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [32, 16], "dropout": 0.2, "dropout_mode": "parity"},
    },
    "fashion_mlp": {
        "data": {
            "name": "synthetic_images",
            "num_samples": 700,
            "channels": 1,
            "image_size": 14,  # the same layers on a quarter of Fashion-MNIST's pixels: half the run time
            "num_classes": 10,
            "batch_size": 32,
            "val_fraction": 0.1,
        },
        "model": {"name": "fashion_mlp"},
    },
    "cnn": {
        "data": {"name": "digits", "batch_size": 32, "val_fraction": 0.2},
        "model": {"name": "cnn", "channels": [4, 8, 8]},
    },
}

# Each optimizer with non-default options switched on, so the suite checks them too.
# Learning rates keep training in a stable regime: at lr 0.05 with Nesterov momentum the
# Fashion MLP is chaotic, and torch run against itself with one weight moved by one ulp
# drifts past 1e-10 by step 172 (measured), so no implementation could agree there.
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "adam": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4, "amsgrad": True},
    "adamw": {"name": "adamw", "lr": 1e-3},
    "rmsprop": {"name": "rmsprop", "lr": 5e-4, "momentum": 0.5, "centered": True, "weight_decay": 1e-4},
    "adagrad": {
        "name": "adagrad",
        "lr": 0.01,
        "lr_decay": 1e-3,
        "initial_accumulator_value": 0.1,
        "weight_decay": 1e-4,
    },
}

BINARY_LOSSES: dict[str, dict[str, Any]] = {
    "bce_pos_weight": {"name": "bce", "pos_weight": 3.0},
    "focal": {"name": "focal", "alpha": 0.25, "gamma": 2.0},
    "cross_entropy": {"name": "cross_entropy", "label_smoothing": 0.1, "class_weights": [0.3, 1.0]},
    "mse": {"name": "mse"},
    "l1": {"name": "l1"},
}
MULTICLASS_LOSSES: dict[str, dict[str, Any]] = {
    "cross_entropy": {"name": "cross_entropy", "label_smoothing": 0.1},
    "weighted_cross_entropy": {
        "name": "cross_entropy",
        "label_smoothing": 0.05,
        "class_weights": [1.0, 0.5, 2.0, 1.0, 1.5, 0.8, 1.2, 1.0, 0.7, 1.3],
    },
    "focal": {"name": "focal", "gamma": 2.0},
    "mse": {"name": "mse"},
    "l1": {"name": "l1"},
}

STEPS = 300


def losses_for(model: str) -> dict[str, dict[str, Any]]:
    return BINARY_LOSSES if model == "mlp" else MULTICLASS_LOSSES


def combinations() -> list[tuple[str, str, str]]:
    return [(model, opt, loss) for model in MODELS for opt in OPTIMIZERS for loss in losses_for(model)]


def parity_config(model: str, optimizer: str, loss: str, steps: int = STEPS) -> dict[str, Any]:
    spec = MODELS[model]
    return {
        "seed": 7,
        "data": {**spec["data"], "drop_last": True, "eval_batch_size": 4096},  # one compiled shape each
        "model": dict(spec["model"]),
        "loss": dict(losses_for(model)[loss]),
        "optimizer": dict(OPTIMIZERS[optimizer]),
        "train": {"epochs": 1000, "max_steps": steps, "precision": "fp64", "log_every": 0},
    }
