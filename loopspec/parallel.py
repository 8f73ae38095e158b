"""Data parallelism, framework-neutral: which rows each replica gets and what its loss weighs.

Each update's global batch comes from the shared batch order and is split into N contiguous
shards, one per replica (np.array_split: when the batch does not divide, the first shards get
one row more). Each replica's loss is its share of the global loss, so that the gradients,
summed over replicas, are the gradient of the global batch's loss whatever the shard sizes:
weight_r = (replica r's normaliser) / (the global batch's normaliser), where the normaliser is
what the loss divides by: the number of rows, or the sum of the class weights of the labels
for a class-weighted cross-entropy (torch's weighted mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopspec.config import LossConfig
from loopspec.errors import UserError


@dataclass(frozen=True)
class Placement:
    """This process's place in a data-parallel run: `rank` of `replicas`, and whether it writes."""

    rank: int = 0
    replicas: int = 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes metrics, checkpoints and weights; every rank computes the same run."""
        return self.rank == 0


def replica_shards(rows: np.ndarray, labels: np.ndarray, loss: LossConfig, replicas: int) -> list[tuple[slice, float]]:
    """Each replica's contiguous part of a micro-batch (positions in `rows`, as np.array_split cuts
    them) and its loss weight; one replica takes the whole batch at weight 1."""
    if replicas == 1:
        return [(slice(None), 1.0)]
    bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(len(rows)), replicas)])
    positions = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
    return list(zip(positions, shard_weights(loss, labels, [rows[p] for p in positions])))


def loss_normaliser(loss: LossConfig, labels: np.ndarray) -> float:
    """What the configured loss's mean divides by for these labels."""
    if loss.name == "cross_entropy" and loss.class_weights is not None:
        return float(np.asarray(loss.class_weights, dtype=np.float64)[labels].sum())
    return float(len(labels))


def shard_weights(loss: LossConfig, labels: np.ndarray, shards: list[np.ndarray]) -> list[float]:
    """Each replica's loss weight: its normaliser over the global batch's (they sum to 1)."""
    total = loss_normaliser(loss, labels[np.concatenate(shards)])
    return [loss_normaliser(loss, labels[shard]) / total for shard in shards]


def resolve_replicas(devices: int | str, available: int, how: str) -> int:
    """train.devices as a count: `auto` takes every available device; more than there are is an error."""
    wanted = available if devices == "auto" else int(devices)
    if wanted > available:
        raise UserError(f"train.devices is {devices} but {how}")
    return wanted


def check_shards(batch_size: int, num_train: int, drop_last: bool, replicas: int, single_row_batchnorm: bool) -> None:
    """Every replica gets rows from every micro-batch, the epoch's short last one included (a tabular
    BatchNorm needs two rows per shard in training, as torch's BatchNorm1d does)."""
    if replicas == 1:
        return
    last = num_train % batch_size
    smallest = batch_size if drop_last or last == 0 else min(batch_size, last)
    least = replicas * (2 if single_row_batchnorm else 1)
    if smallest < least:
        which = "data.batch_size" if smallest == batch_size else f"the epoch's last batch ({last} rows)"
        fix = (
            "raise data.batch_size" if smallest == batch_size else "set data.drop_last: true or change data.batch_size"
        )
        raise UserError(f"{which} gives {replicas} replicas fewer than {least // replicas} rows each; {fix}")
