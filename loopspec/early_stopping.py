"""Early stopping with Keras's semantics (monitor, mode, patience, min_delta, restore best)."""

from __future__ import annotations

import math

from loopspec.config import EarlyStoppingConfig, monitor_mode


class EarlyStopping:
    """Tracks the monitored metric; `update` returns True when the epoch is a new best."""

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.mode = monitor_mode(cfg.mode, cfg.monitor)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0

    def update(self, value: float, epoch: int) -> bool:
        if self.mode == "min":
            improved = value < self.best - self.cfg.min_delta
        else:
            improved = value > self.best + self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.cfg.enabled and self.wait >= self.cfg.patience
