"""What every peer program shares: its arguments, the workload's config and arrays, and the clock
that stamps each epoch. Imports neither torch nor jax (each program imports its own framework).

A program is run as `python -m benchmarks.peer_programs.NAME --config RECIPE --set KEY=VALUE ...
--result FILE`: the same recipe and overrides the library's command line gets, so every peer reads
its model, data, optimizer, schedule, loss and precision from the one validated Config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import numpy as np

from loopspec.batching import train_batches
from loopspec.config import Config, load_config
from loopspec.data import Dataset, load_dataset
from loopspec.models import output_dim
from loopspec.schedules import plan_schedule, schedule_horizon


def parse_args(argv: Optional[Sequence[str]] = None, backend: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one peer program of benchmarks.peers")
    if backend:
        parser.add_argument("--backend", choices=("torch", "jax"), required=True)
    parser.add_argument("--config", required=True, help="a recipe name or config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--result", required=True, help="where to write the epoch times (JSON)")
    return parser.parse_args(argv)


class Workload(NamedTuple):
    """The config and everything a peer derives from it the way the library does."""

    config: Config
    data: Dataset
    out_dim: int
    updates_per_epoch: int
    schedule_interval: str  # "step" or "epoch"
    schedule_horizon: int  # T_max (epochs) for cosine, total updates for warmup_cosine

    @property
    def tokens(self) -> bool:
        return bool(np.issubdtype(self.data.x_train.dtype, np.integer))


# What the peers implement: the three workloads of benchmarks.peers, nothing more.
SUPPORTED = {
    "model": ("mlp", "cnn", "gpt"),
    "loss": ("focal", "cross_entropy"),
    "optimizer": ("adam", "adamw"),
    "schedule": ("none", "cosine", "warmup_cosine"),
    "precision": ("fp32",),
}


def load_workload(args: argparse.Namespace) -> Workload:
    config = load_config(args.config, args.set)
    used = {
        "model": config.model.name,
        "loss": config.loss.name,
        "optimizer": config.optimizer.name,
        "schedule": config.schedule.name,
        "precision": config.train.precision,
    }
    for section, value in used.items():
        if value not in SUPPORTED[section]:
            raise SystemExit(f"peer programs implement {section} {SUPPORTED[section]}, not {value}")
    if config.train.accumulation_steps != 1 or config.train.clip_grad_value is not None:
        raise SystemExit("peer programs implement neither gradient accumulation nor clip_grad_value")
    data = load_dataset(config.data)
    plan = plan_schedule(config, len(data.y_train))
    return Workload(
        config,
        data,
        output_dim(config.loss.name, data.num_classes),
        plan.updates_per_epoch,
        plan.interval,
        schedule_horizon(config, plan),
    )


def epoch_rows(workload: Workload, epoch: int) -> list[np.ndarray]:
    """The library's seeded batch order for `epoch` (1-based), so a peer sees the same batches."""
    data, cfg = workload.config.data, workload.config
    return train_batches(len(workload.data.y_train), data.batch_size, cfg.seed, epoch, data.shuffle, data.drop_last)


class LibraryOrder:
    """The library's batch order as a torch DataLoader batch_sampler: each pass is the next epoch."""

    def __init__(self, workload: Workload):
        self.workload, self.epoch = workload, 0

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch += 1
        return iter([rows.tolist() for rows in epoch_rows(self.workload, self.epoch)])

    def __len__(self) -> int:
        return self.workload.updates_per_epoch


def cosine_per_epoch(lr: float, eta_min: float, t_max: int, epoch: int) -> float:
    """CosineAnnealingLR's closed form at `epoch` (0-based): for the peers whose schedule API is not torch's."""
    return eta_min + (lr - eta_min) * (1 + np.cos(np.pi * epoch / t_max)) / 2


class EpochClock:
    """perf_counter at the end of each epoch's training phase and of each epoch (after validation),
    and the wall clock (time.time) at each epoch's end, which the driver compares with its launch."""

    def __init__(self) -> None:
        self.train_end: list[float] = []
        self.epoch_end: list[float] = []
        self.wall_epoch_end: list[float] = []
        self.updates: list[int] = []
        self.val_loss: list[float] = []

    def train_done(self, updates: int, at: Optional[float] = None) -> None:
        self.train_end.append(time.perf_counter() if at is None else at)
        self.updates.append(updates)

    def epoch_done(self, val_loss: float) -> None:
        self.epoch_end.append(time.perf_counter())
        self.wall_epoch_end.append(time.time())
        self.val_loss.append(float(val_loss))

    def write(self, path: str | Path, version: str, device: str, **extra: Any) -> None:
        Path(path).write_text(
            json.dumps(
                {
                    "version": version,
                    "device": device,
                    "train_end": self.train_end,
                    "epoch_end": self.epoch_end,
                    "wall_epoch_end": self.wall_epoch_end,
                    "updates": self.updates,
                    "val_loss": self.val_loss,
                    **extra,
                }
            )
        )
