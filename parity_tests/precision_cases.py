"""Small configs, one per model, for the mixed-precision checks on CPU (each runs for 5 seeds x
3 precisions x 2 backends, so they are kept to seconds)."""

from __future__ import annotations

from typing import Any

PRECISION_CASES: dict[str, dict[str, Any]] = {
    "mlp": {
        "data": {"name": "intrusion", "num_samples": 4000, "batch_size": 64},
        "model": {"name": "mlp", "hidden": [64, 32], "dropout": 0.1, "dropout_mode": "parity"},
        "loss": {"name": "focal"},
        "optimizer": {"name": "adamw", "lr": 2e-3},
        "train": {"epochs": 6, "log_every": 0},
    },
    "fashion_mlp": {
        "data": {"name": "synthetic_images", "num_samples": 900, "channels": 1, "image_size": 28, "batch_size": 64},
        "model": {"name": "fashion_mlp"},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"epochs": 5, "log_every": 0},
    },
    "cnn": {
        "data": {"name": "digits", "batch_size": 32},
        "model": {"name": "cnn", "channels": [8, 16, 16]},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adam", "lr": 3e-3},
        "train": {"epochs": 5, "log_every": 0},
    },
    "gpt": {  # untied: a tied head this small sits on the unigram plateau for the first few hundred updates
        "data": {"name": "text", "block_size": 32, "stride": 8, "batch_size": 32, "drop_last": True},
        "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "tie_weights": False},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1, "decay": "matrices"},
        "schedule": {"name": "warmup_cosine", "warmup": 10},
        "train": {"epochs": 4, "log_every": 0, "clip_grad_norm": 1.0},
    },
}


def precision_case(model: str, precision: str, seed: int = 0) -> dict[str, Any]:
    case: dict[str, Any] = {key: dict(value) for key, value in PRECISION_CASES[model].items()}
    case["seed"] = seed
    case["train"]["precision"] = precision
    return case
