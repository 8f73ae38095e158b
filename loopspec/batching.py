"""The seeded batch order both backends follow, computed once in NumPy."""

from __future__ import annotations

import numpy as np


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Sample order for one epoch, a pure function of (seed, epoch)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, 0xBA7C])).permutation(num_samples)


def train_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = False
) -> list[np.ndarray]:
    """Index arrays of one epoch's training batches; the last one is short unless drop_last."""
    order = epoch_order(num_samples, seed, epoch, shuffle)
    stop = num_samples - num_samples % batch_size if drop_last else num_samples
    return [order[start : min(start + batch_size, stop)] for start in range(0, stop, batch_size)]


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def eval_batches(num_samples: int, batch_size: int) -> list[slice]:
    return [slice(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]


def update_windows(batches: list[np.ndarray], accumulation_steps: int) -> list[list[np.ndarray]]:
    """Group an epoch's micro-batches into optimizer updates of `accumulation_steps` each.

    A trailing partial window (when the batch count is not a multiple) is its own, shorter
    update: its gradient is the mean of the micro-batches it has, on both backends.
    """
    k = accumulation_steps
    return [batches[start : start + k] for start in range(0, len(batches), k)]


def updates_per_epoch(num_samples: int, batch_size: int, drop_last: bool, accumulation_steps: int) -> int:
    return -(-batches_per_epoch(num_samples, batch_size, drop_last) // accumulation_steps)
