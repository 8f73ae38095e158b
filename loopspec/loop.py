"""The training loop, written once for both backends.

A backend (torchloop.train.TorchBackend, flaxloop.train.JaxBackend) holds the framework's
state and does what only the framework can: dispatch one optimizer update on a window of
micro-batches, read a dispatched update back, evaluate a validation batch, advance an epoch
schedule, export the weights. Everything else is decided here, the same way for both:

- the epochs, the seeded batch order, the accumulation windows and parity dropout masks;
- the read-back policy: an update is read back `readback_lag` updates after it was dispatched
  (torch 0; JAX 1, so the host never waits for the device between updates);
- what a skipped update means: an fp16 overflow is recorded and training goes on; a non-finite
  loss or gradient is recorded and skipped, or saved and stopped (train.on_nonfinite);
- schedules: a per-step schedule advances with the optimizer's count of applied updates (inside
  each backend's update, so a skipped update never moves it); a per-epoch schedule and plateau
  advance after every validation, skips or not (`Backend.end_epoch`);
- early stopping, the best weights, max_steps, and the records every sink receives.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional, Protocol, Sequence

import numpy as np

from loopspec.batching import eval_batches, train_batches, update_windows
from loopspec.early_stopping import EarlyStopping
from loopspec.errors import TrainingDiverged
from loopspec.metrics import classification_metrics, predictions
from loopspec.run import RunSetup, prepare_run
from loopspec.sinks import ConsoleSink, JsonlSink, Sink
from loopspec.weights import save_weights

Outcome = Literal["applied", "overflow", "nonfinite"]


class StepResult(NamedTuple):
    """One optimizer update, read back to the host."""

    outcome: Outcome  # applied; skipped for an fp16 overflow; skipped for a non-finite loss or gradient
    loss: float  # the window's mean mini-batch loss
    lr: float  # the learning rate the update used
    grad_norm: float  # global L2 norm of the (unscaled) gradient, before clipping
    momentum: Optional[float] = None  # SGD/RMSprop momentum or Adam beta1 the update used
    clipped: Optional[bool] = None  # whether clipping acted (None without clipping)
    loss_scale: Optional[float] = None  # fp16: the loss scale the update used


class MicroBatch(NamedTuple):
    rows: np.ndarray  # indices into the training split
    dropout_masks: Optional[list[np.ndarray]]  # parity-mode masks, one per dropout layer


class Backend(Protocol):
    """What the loop needs from a framework. The backend builds its state from the RunSetup."""

    name: str
    readback_lag: int

    def dispatch(self, window: Sequence[MicroBatch]) -> Any:
        """Start one optimizer update on the window; returns a handle for read/rewind."""

    def read(self, handle: Any) -> StepResult:
        """The update's result on the host (waits for it)."""

    def rewind(self, handle: Any) -> None:
        """Make the state after `handle`'s update current, dropping updates dispatched later."""

    def evaluate(self, rows: slice) -> tuple[float, np.ndarray]:
        """Mean loss and float64 logits of one validation batch, in eval mode."""

    def end_epoch(self, epochs_done: int, monitored: float) -> None:
        """Advance a per-epoch schedule (or plateau, on the monitored value) after a validation."""

    def export_weights(self) -> dict[str, np.ndarray]:
        """Weights and BatchNorm buffers in the canonical layout (torch state_dict names)."""


def monitored_value(monitor: str, train_loss: float, val: dict[str, float]) -> float:
    """The epoch's value of a monitor name (early stopping, plateau schedule)."""
    return train_loss if monitor == "train_loss" else val[monitor]


def validation_metrics(loss_sum: float, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """val_loss (sample-weighted mean of batch losses), accuracy and binary P/R/F1."""
    metrics = {"val_loss": loss_sum / len(labels)}
    metrics.update(classification_metrics(labels, predictions(logits), num_classes))
    return metrics


class Dispatched(NamedTuple):
    window: list[np.ndarray]
    handle: Any
    forward_passes: int  # training forward passes after this update's window


def train(setup: RunSetup, backend: Backend, sinks: Optional[Sequence[Sink]] = None) -> dict[str, Any]:
    """Run the configured training; returns the summary record. Writes init.safetensors,
    metrics.jsonl (through the sinks) and final.safetensors to setup.out_dir."""
    if sinks is None:
        train_cfg = setup.config.train
        sinks = [
            JsonlSink(setup.out_dir / "metrics.jsonl"),
            ConsoleSink(backend.name, train_cfg.epochs, train_cfg.log_every, setup.out_dir / "final.safetensors"),
        ]
    loop = Loop(setup, backend, sinks)
    try:
        return loop.run()
    finally:
        for sink in sinks:
            sink.close()


class Loop:
    """The run's position (epoch, applied updates, forward passes) and its policies."""

    def __init__(self, setup: RunSetup, backend: Backend, sinks: Sequence[Sink]):
        self.setup, self.backend, self.sinks = setup, backend, sinks
        self.config, self.train_cfg = setup.config, setup.config.train
        self.stopper = EarlyStopping(self.train_cfg.early_stopping)
        self.step = self.forward_passes = self.skipped = self.epoch_skipped = 0
        self.epoch_losses: list[float] = []
        self.epoch_records: list[dict[str, Any]] = []
        self.best_weights: Optional[dict[str, np.ndarray]] = None
        self.stopped_by: Optional[str] = None
        self.started = self.epoch_started = time.perf_counter()

    def emit(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def run(self) -> dict[str, Any]:
        save_weights(
            self.setup.out_dir / "init.safetensors", self.backend.export_weights(), {"backend": self.backend.name}
        )
        for epoch in range(1, self.train_cfg.epochs + 1):
            self.train_epoch(epoch)
            train_loss = float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan")
            val = self.validate()
            improved = self.record_epoch(epoch, train_loss, val)
            self.backend.end_epoch(epoch, monitored_value(self.config.schedule.monitor, train_loss, val))
            if improved and self.keep_best_weights:
                self.best_weights = self.backend.export_weights()
            if self.stopper.should_stop or self.reached_max_steps:
                break
        restored = self.best_weights is not None
        return self.finish(self.best_weights if restored else self.backend.export_weights(), restored)

    # ------------------------------------------------------------------ one epoch of updates

    def train_epoch(self, epoch: int) -> None:
        data = self.config.data
        batches = train_batches(
            len(self.setup.dataset.y_train), data.batch_size, self.config.seed, epoch, data.shuffle, data.drop_last
        )
        pending: collections.deque[Dispatched] = collections.deque()
        for window in update_windows(batches, self.train_cfg.accumulation_steps):
            micro = [
                MicroBatch(rows, self.setup.dropout_masks(self.forward_passes + i, len(rows)))
                for i, rows in enumerate(window)
            ]
            self.forward_passes += len(window)
            pending.append(Dispatched(window, self.backend.dispatch(micro), self.forward_passes))
            while len(pending) > self.backend.readback_lag:
                if self.settle(epoch, pending.popleft(), later=bool(pending)):
                    return
        while pending:
            self.settle(epoch, pending.popleft(), later=bool(pending))

    def settle(self, epoch: int, done: Dispatched, later: bool) -> bool:
        """Read one update back and apply the run's policy; True when training must stop here."""
        result = self.backend.read(done.handle)
        if result.outcome == "overflow":  # fp16: the scaler skipped the update and backed off
            self.record_skip(epoch, result, overflow=True)
            return False
        if result.outcome == "nonfinite":  # the backend kept the weights; skip or stop here
            self.record_skip(epoch, result, overflow=False)
            if self.train_cfg.on_nonfinite == "stop":
                self.rewind_to(done, later)
                self.stop_nonfinite(epoch, result, done.window)
            return False
        self.step += 1
        self.epoch_losses.append(result.loss)
        self.emit({"kind": "step", "step": self.step, "epoch": epoch, **self.step_values(result), "skipped": False})
        if self.reached_max_steps:
            self.rewind_to(done, later)  # drop what was dispatched past the end
            return True
        return False

    def rewind_to(self, done: Dispatched, later: bool) -> None:
        if later:
            self.backend.rewind(done.handle)
        self.forward_passes = done.forward_passes

    def step_values(self, result: StepResult) -> dict[str, Any]:
        values = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm}
        if self.setup.cycles_momentum:
            values["momentum"] = result.momentum
        if self.setup.clipping:
            values["clipped"] = result.clipped
        if self.train_cfg.precision == "fp16":
            values["loss_scale"] = result.loss_scale
        return values

    def record_skip(self, epoch: int, result: StepResult, overflow: bool) -> None:
        record: dict[str, Any] = {"kind": "step", "step": self.step, "epoch": epoch, "lr": result.lr}
        if overflow:
            record["loss_scale"] = result.loss_scale
        self.emit({**record, "skipped": True, **({"overflow": True} if overflow else {})})
        self.skipped += 1
        self.epoch_skipped += 1

    def stop_nonfinite(self, epoch: int, result: StepResult, window: list[np.ndarray]) -> None:
        x = self.setup.dataset.x_train
        bad_inputs = any(not np.isfinite(x[rows]).all() for rows in window)
        causes = (
            "the input batch holds NaN/inf values"
            if bad_inputs
            else f"the learning rate ({result.lr:.3g}) may be too high, the data may hold extreme values, "
            f"or {self.train_cfg.precision} precision overflowed"
        )
        self.stopped_by = "nonfinite"
        self.finish(self.backend.export_weights(), restored=False)
        raise TrainingDiverged(
            f"non-finite loss ({result.loss}) or gradient norm ({result.grad_norm}) at update {self.step + 1} "
            f"(epoch {epoch}); likely cause: {causes}. Weights from before this update saved to "
            f"{self.setup.out_dir / 'final.safetensors'}; set train.on_nonfinite: skip to skip such updates instead"
        )

    @property
    def reached_max_steps(self) -> bool:
        return self.train_cfg.max_steps is not None and self.step >= self.train_cfg.max_steps

    @property
    def keep_best_weights(self) -> bool:
        es = self.train_cfg.early_stopping
        return es.enabled and es.restore_best_weights

    # ------------------------------------------------------------------ validation and the end

    def validate(self) -> dict[str, float]:
        data = self.setup.dataset
        loss_sum, outputs = 0.0, []
        for rows in eval_batches(len(data.y_val), self.config.data.eval_batch_size):
            loss, logits = self.backend.evaluate(rows)
            loss_sum += loss * (rows.stop - rows.start)
            outputs.append(logits)
        return validation_metrics(loss_sum, np.concatenate(outputs), data.y_val, data.num_classes)

    def record_epoch(self, epoch: int, train_loss: float, val: dict[str, float]) -> bool:
        """Write the epoch record and update early stopping; True when this epoch is the new best."""
        now = time.perf_counter()
        improved = self.stopper.update(monitored_value(self.stopper.cfg.monitor, train_loss, val), epoch)
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": self.step,
            "train_loss": train_loss,
            **val,
            "skipped": self.epoch_skipped,
            "improved": improved,
            "seconds": round(now - self.epoch_started, 3),
        }
        self.epoch_started, self.epoch_losses, self.epoch_skipped = now, [], 0
        self.epoch_records.append(record)
        self.emit(record)
        return improved

    def finish(self, final_weights: dict[str, np.ndarray], restored: bool) -> dict[str, Any]:
        """Save final.safetensors and the summary record; returns the summary."""
        if self.stopped_by is None and self.stopper.should_stop:
            self.stopped_by = "early_stopping"
        last_epoch = self.epoch_records[-1]["epoch"] if self.epoch_records else 0
        final_epoch = self.stopper.best_epoch if restored else last_epoch
        final_val = next((r for r in self.epoch_records if r["epoch"] == final_epoch), {})
        save_weights(
            self.setup.out_dir / "final.safetensors",
            final_weights,
            {"backend": self.backend.name, "epoch": str(final_epoch)},
        )
        summary = {
            "kind": "summary",
            "backend": self.backend.name,
            "steps": self.step,
            "epochs": last_epoch,
            "stopped_by": self.stopped_by,
            "stopped_early": self.stopped_by == "early_stopping",
            "skipped_updates": self.skipped,
            "best_epoch": self.stopper.best_epoch,
            "monitor": self.stopper.cfg.monitor,
            "best_value": self.stopper.best,
            "restored_best": restored,
            "final_epoch": final_epoch,
            **{k: v for k, v in final_val.items() if k.startswith("val_")},
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.emit(summary)
        return summary


class BackendClass(Protocol):
    name: str

    def scope(self, config: Any) -> Any:
        """A context for the whole run: device and precision checked (before anything is written), set up."""

    def __call__(self, setup: RunSetup) -> Backend: ...


def fit(config: Any, out_dir: str | Path, init_path: Optional[str | Path], backend: BackendClass) -> dict[str, Any]:
    """Check the device and precision, prepare the run directory, build the backend's state, train."""
    with backend.scope(config):
        setup = prepare_run(config, out_dir, init_path, backend.name)
        return train(setup, backend(setup))
