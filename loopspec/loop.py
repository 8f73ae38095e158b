"""The training loop, written once for both backends.

A backend (torchloop.train.TorchBackend, flaxloop.train.JaxBackend) holds the framework's
state and does what only the framework can: dispatch one optimizer update on a window of
micro-batches, read a dispatched update back, evaluate a validation batch, advance an epoch
schedule, export the weights. Everything else is decided here, the same way for both:

- the epochs, the seeded batch order, the accumulation windows, and the coordinates of each
  micro-batch's parity dropout masks (its forward pass, its rows' positions);
- the read-back policy: an update is read back `readback_lag` updates after it was dispatched
  (JAX, and torch on a GPU without fp16: 1, so the host does not wait for the device between
  updates; torch on the CPU, or with fp16's GradScaler reading its flags on the host: 0);
- what a skipped update means: an fp16 overflow is recorded and training goes on; a non-finite
  loss or gradient is recorded and skipped, or saved and stopped (train.on_nonfinite);
- schedules: a per-step schedule advances with the optimizer's count of applied updates (inside
  each backend's update, so a skipped update never moves it); a per-epoch schedule and plateau
  advance after every validation, skips or not (`Backend.end_epoch`);
- early stopping, the best weights, max_steps, and the records every sink receives.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple, Optional, Protocol, Sequence

import numpy as np

from loopspec.batching import eval_batches, train_batches, update_windows
from loopspec.checkpoint import (
    Checkpoint,
    check_resumable,
    checkpoint_root,
    resolve_resume,
    restarts_same_run,
    save_checkpoint,
    step_name,
)
from loopspec.config import Config, as_config, config_from_dict, resolved_config
from loopspec.data import Dataset, arrays_dataset
from loopspec.early_stopping import EarlyStopping
from loopspec.errors import Paused, RunInterrupted, TrainingDiverged, UserError
from loopspec.metrics import classification_metrics, predictions, read_metrics
from loopspec.results import Run, load_run
from loopspec.run import RunSetup, checkpoint_fits, claim_run, plan_run
from loopspec.sinks import Sink, console_logger, run_sinks
from loopspec.weights import load_weights, save_weights

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
    forward_pass: int  # training forward passes before this one: the index of its parity dropout masks
    # Each row's position in the micro-batch as drawn: the row of the parity dropout masks it takes
    # (loopspec.dropout), which the backend generates on its device. A range, so a shard or the
    # reversed order stays one, and torch makes it on the device with arange.
    positions: range


def reversed_rows(batch: MicroBatch) -> MicroBatch:
    """The same micro-batch with its rows, and each row's dropout masks, in reverse order: the same
    mathematics, another summation order in every reduction over the batch."""
    return batch._replace(rows=np.ascontiguousarray(batch.rows[::-1]), positions=batch.positions[::-1])


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

    def export_state(self, handle: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The training state after `handle`'s update: tensors (model.*, optimizer.*, rng.*) and
        JSON values (hyperparameters, plateau, loss scale), in the layout both backends read."""

    def import_state(self, checkpoint: Checkpoint) -> None:
        """Continue from a checkpoint written by either backend."""

    def any_replica_interrupted(self, signum: Optional[int]) -> Optional[int]:
        """The signal any replica process received (data-parallel runs over several processes)."""


def monitored_value(monitor: str, train_loss: float, val: dict[str, float]) -> float:
    """The epoch's value of a monitor name (early stopping, plateau schedule)."""
    return train_loss if monitor == "train_loss" else val[monitor]


def validation_metrics(loss_sum: float, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """val_loss (sample-weighted mean of batch losses), accuracy and binary P/R/F1; for token labels
    (N, T) next-token accuracy and the perplexity exp(val_loss)."""
    metrics = {"val_loss": loss_sum / len(labels)}
    if labels.ndim > 1:
        metrics["val_perplexity"] = float(np.exp(min(metrics["val_loss"], 700.0)))
    metrics.update(classification_metrics(labels, predictions(logits), num_classes))
    return metrics


class InFlight(NamedTuple):
    window: list[np.ndarray]
    handle: Any
    forward_passes: int  # training forward passes after this update's window
    index: int  # type: ignore[assignment]  # the window's place in its epoch; shadows tuple.index, never called


def train(
    setup: RunSetup, backend: Backend, sinks: Optional[Sequence[Sink]] = None, resume: Optional[Checkpoint] = None
) -> dict[str, Any]:
    """Run the configured training, from the start or from a checkpoint; returns the summary record.
    Writes init.safetensors, metrics.jsonl (through the sinks), checkpoints/ and final.safetensors."""
    kept = resume.state["position"]["records"] if resume is not None else 0
    if resume is not None and setup.placement.writes:
        carry_history(resume, setup.out_dir)
    if sinks is None and not setup.placement.writes:
        sinks = []
    if sinks is None:
        position = resume.state["position"] if resume is not None else None
        sinks = run_sinks(setup.out_dir, backend.name, setup.config.train, setup.plan.updates_per_epoch, kept, position)
    loop = Loop(setup, backend, sinks)
    try:
        with loop.signals_saved():
            return loop.run(resume)
    finally:
        for sink in sinks:
            sink.close()


def carry_history(checkpoint: Checkpoint, out_dir: Path) -> None:
    """Resuming into another run directory (another backend's, say): bring the source run's initial
    weights and its metrics up to the checkpoint, so the new directory records the whole run."""
    source = checkpoint.path.parent.parent
    if source.resolve() == out_dir.resolve():
        return
    for name in ("init.safetensors", "metrics.jsonl", "best.safetensors"):
        if (source / name).exists():
            shutil.copyfile(source / name, out_dir / name)


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
        self.best_step: Optional[int] = None  # the checkpoint holding the best epoch's state, if one was saved
        self.stopped_by: Optional[str] = None
        self.records = 0  # records emitted: the metrics.jsonl lines a checkpoint keeps
        self.signal_seen: Optional[int] = None  # set by the signal handler, at any moment
        self.interrupted: Optional[int] = None  # the signal the run stops for, agreed by every replica
        self.started = self.epoch_started = time.perf_counter()
        self.writes = setup.placement.writes  # rank 0 of a data-parallel run, or the only process

    def emit(self, record: dict[str, Any]) -> None:
        self.records += 1
        for sink in self.sinks:
            sink.write(record)

    def run(self, resume: Optional[Checkpoint] = None) -> dict[str, Any]:
        first_epoch, first_window = self.restore(resume) if resume is not None else (1, 0)
        if self.writes and (resume is None or not (self.setup.out_dir / "init.safetensors").exists()):
            weights = self.backend.export_weights() if resume is None else resume.prefixed("model")
            save_weights(self.setup.out_dir / "init.safetensors", weights, {"backend": self.backend.name})
        for epoch in range(first_epoch, self.train_cfg.epochs + 1):
            self.train_epoch(epoch, first_window if epoch == first_epoch else 0)
            train_loss = float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan")
            val = self.validate()
            improved = self.record_epoch(epoch, train_loss, val)
            self.backend.end_epoch(epoch, monitored_value(self.config.schedule.monitor, train_loss, val))
            if improved and self.keep_best_weights:
                self.best_weights = self.backend.export_weights()
                if self.writes:
                    save_weights(self.setup.out_dir / "best.safetensors", self.best_weights, {"epoch": str(epoch)})
            done = self.stopper.should_stop or self.reached_max_steps or epoch == self.train_cfg.epochs
            self.agree_on_interruption()
            if self.train_cfg.checkpoint.every_epoch or self.interrupted:
                self.save_checkpoint(epoch + 1, 0, None, best=improved)
            if done:
                break
            self.stop_if_interrupted()
        restored = self.best_weights is not None
        return self.finish(
            self.best_weights if self.best_weights is not None else self.backend.export_weights(), restored
        )

    # ------------------------------------------------------------------ checkpoints and signals

    def save_checkpoint(self, epoch: int, window: int, handle: Any, best: bool = False) -> None:
        """The state after `handle`'s update (None: the current state); the next window to run is
        `window` of `epoch`."""
        if best:
            self.best_step = self.step
        if not self.writes:
            return
        tensors, backend_state = self.backend.export_state(handle)
        state = {
            "backend": self.backend.name,
            "config": resolved_config(self.config),
            "position": {
                "epoch": epoch,
                "window": window,
                "step": self.step,
                "forward_passes": self.forward_passes,
                "records": self.records,
            },
            "loop": {
                "epoch_losses": self.epoch_losses,
                "epoch_skipped": self.epoch_skipped,
                "skipped": self.skipped,
                "early_stopping": {
                    "best": self.stopper.best,
                    "best_epoch": self.stopper.best_epoch,
                    "wait": self.stopper.wait,
                },
                "best_step": self.best_step,
            },
            "preprocessing": self.setup.dataset.preprocessing.to_dict(),
            **backend_state,
        }
        save_checkpoint(self.setup.out_dir, tensors, state, self.train_cfg.checkpoint.keep_last, self.best_step)

    def restore(self, checkpoint: Checkpoint) -> tuple[int, int]:
        """Take up a checkpoint's position and policies; returns (epoch, window) to continue from."""
        position, loop = checkpoint.state["position"], checkpoint.state["loop"]
        self.step, self.forward_passes = position["step"], position["forward_passes"]
        self.records = position["records"]
        self.epoch_losses, self.epoch_skipped = loop["epoch_losses"], loop["epoch_skipped"]
        self.skipped = loop["skipped"]
        stopping = loop["early_stopping"]
        self.stopper.best, self.stopper.best_epoch, self.stopper.wait = (
            stopping["best"],
            stopping["best_epoch"],
            stopping["wait"],
        )
        self.best_step = loop["best_step"]
        best_file, metrics = self.setup.out_dir / "best.safetensors", self.setup.out_dir / "metrics.jsonl"
        if self.writes:  # what only rank 0 uses (its summary and final weights), while it may still copy them in
            if self.keep_best_weights and self.stopper.best_epoch and best_file.exists():
                self.best_weights = load_weights(best_file)
            self.epoch_records = read_metrics(metrics)["epoch"] if metrics.exists() else []
        self.backend.import_state(checkpoint)
        return position["epoch"], position["window"]

    @contextlib.contextmanager
    def signals_saved(self) -> Iterator[None]:
        """SIGINT and SIGTERM finish the update in flight, save a checkpoint and stop the run; a
        second signal acts at once (the default handlers are back)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

        def ask_to_stop(signum: int, frame: Any) -> None:
            self.signal_seen = signum
            for restored, handler in previous.items():
                signal.signal(restored, handler)

        for signum in previous:
            signal.signal(signum, ask_to_stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def agree_on_interruption(self) -> None:
        """Take up a signal at this point only (the handler may fire between two checks), and with
        replicas, the signal any of them saw: all stop at the same update."""
        seen = self.signal_seen
        self.interrupted = self.backend.any_replica_interrupted(seen) if self.setup.placement.replicas > 1 else seen

    def stop_if_interrupted(self) -> None:
        if self.interrupted is not None:
            name = signal.Signals(self.interrupted).name
            raise RunInterrupted(
                self.interrupted,
                f"{name} after update {self.step}: checkpoint saved in "
                f"{checkpoint_root(self.setup.out_dir)}; continue with --resume {self.setup.out_dir}",
            )

    # ------------------------------------------------------------------ one epoch of updates

    def train_epoch(self, epoch: int, first_window: int = 0) -> None:
        data = self.config.data
        batches = train_batches(
            len(self.setup.dataset.y_train), data.batch_size, self.config.seed, epoch, data.shuffle, data.drop_last
        )
        pending: collections.deque[InFlight] = collections.deque()
        windows = update_windows(batches, self.train_cfg.accumulation_steps)
        for index, window in enumerate(windows):
            if index < first_window:  # done before the checkpoint this run resumed from
                continue
            micro = [MicroBatch(rows, self.forward_passes + i, range(len(rows))) for i, rows in enumerate(window)]
            if self.setup.reverse_batch_rows:
                micro = [reversed_rows(batch) for batch in micro]
            self.forward_passes += len(window)
            pending.append(InFlight(window, self.backend.dispatch(micro), self.forward_passes, index))
            while len(pending) > self.backend.readback_lag:
                if self.settle(epoch, pending.popleft(), later=bool(pending)):
                    return
        while pending:
            self.settle(epoch, pending.popleft(), later=bool(pending))

    def settle(self, epoch: int, done: InFlight, later: bool) -> bool:
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
        if self.step == self.setup.pause_after:
            self.pause(epoch, done, later)
        if self.reached_max_steps:
            self.rewind_to(done, later)  # drop what was dispatched past the end
            return True
        every = self.train_cfg.checkpoint.every_steps
        self.agree_on_interruption()
        if self.interrupted is not None or (every and self.step % every == 0):
            forward_passes, self.forward_passes = self.forward_passes, done.forward_passes
            self.save_checkpoint(epoch, done.index + 1, done.handle)
            self.forward_passes = forward_passes
            if self.interrupted is not None:
                self.rewind_to(done, later)
                self.stop_if_interrupted()
        return False

    def pause(self, epoch: int, done: InFlight, later: bool) -> None:
        forward_passes, self.forward_passes = self.forward_passes, done.forward_passes
        self.save_checkpoint(epoch, done.index + 1, done.handle)
        self.forward_passes = forward_passes
        self.rewind_to(done, later)
        raise Paused(self.step, checkpoint_root(self.setup.out_dir) / step_name(self.step))

    def rewind_to(self, done: InFlight, later: bool) -> None:
        if later:
            self.backend.rewind(done.handle)
        self.forward_passes = done.forward_passes

    def step_values(self, result: StepResult) -> dict[str, Any]:
        values: dict[str, Any] = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm}
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
        if self.writes:
            metadata = {"backend": self.backend.name, "epoch": str(final_epoch)}
            save_weights(self.setup.out_dir / "final.safetensors", final_weights, metadata)
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


def check_not_finished(checkpoint: Checkpoint, config: Config) -> None:
    """A checkpoint at the end of its run (all epochs, max_steps, or early stopping) has nothing to continue."""
    position, stopping, train_cfg = (
        checkpoint.state["position"],
        checkpoint.state["loop"]["early_stopping"],
        config.train,
    )
    stopped = train_cfg.early_stopping.enabled and stopping["wait"] >= train_cfg.early_stopping.patience
    at_max = train_cfg.max_steps is not None and position["step"] >= train_cfg.max_steps
    if at_max or stopped or position["epoch"] > train_cfg.epochs:
        raise UserError(
            f"checkpoint {checkpoint.path} is at the end of its run (update {position['step']}, epoch "
            f"{position['epoch'] - 1}); raise train.epochs or train.max_steps to train further"
        )


class BackendClass(Protocol):
    name: str

    def scope(self, config: Any) -> Any:
        """A context for the whole run: device, precision and replicas checked (before anything is
        written) and set up; it yields this process's loopspec.parallel.Placement."""

    def __call__(self, setup: RunSetup) -> Backend: ...


def backend_fit(backend: BackendClass) -> Callable[..., Optional[Run]]:
    """The `fit` of one backend: loopspec.fit's signature with the backend fixed, over run_training."""

    def fit_backend(
        config: Config | dict[str, Any] | str | Path,
        out_dir: str | Path,
        overrides: Sequence[str] = (),
        init: Any = None,
        resume: Optional[str | Path] = None,
        overwrite: bool = False,
        model: Any = None,
        data: Any = None,
        loss: Any = None,
        *,
        pause_after: Optional[int] = None,
        reverse_batch_rows: bool = False,
    ) -> Optional[Run]:
        config, models, dataset = with_model_and_data(as_config(config, overrides), backend.name, model, data)
        losses = {} if loss is None else {backend.name: loss}
        summary = run_training(
            config, out_dir, backend, init, resume, overwrite, models, dataset, losses, pause_after, reverse_batch_rows
        )
        return None if summary is None else load_run(out_dir, models=models)

    fit_backend.__doc__ = (
        f"Train with the {backend.name} backend; returns the finished loopspec.results.Run (summary, history, "
        "model). config: a Config, a dict of sections, a file path or a recipe name, with `key=value` overrides. "
        "model: a module of this backend's framework, or an import string 'pkg.module:factory'; data: a dict "
        "of arrays x_train, y_train, x_val, y_val or an .npz path; loss: (logits, labels) -> the mean loss, in "
        "this backend's framework; init: initial weights (a safetensors path, a "
        "dict of arrays under torch's names, or a Run). Writes config.json, run.json, metrics.jsonl, "
        "checkpoints/ and init/final.safetensors to out_dir; resume and overwrite as in "
        "loopspec.loop.run_training. In a data-parallel run over several processes (torchrun), ranks other "
        "than 0 write nothing and return None."
    )
    return fit_backend


def with_model_and_data(
    config: Config, backend: str, model: Any, data: Any
) -> tuple[Config, dict[str, Any], Optional[Dataset]]:
    """The config with fit's `model` and `data` taken in: an import string becomes model.torch or
    model.flax (model.name custom); a module object travels beside the config; arrays become the
    `arrays` dataset (an .npz path is recorded, so the run reloads its data)."""
    raw, models, dataset = config.to_dict(), {}, None
    if model is not None:
        raw["model"]["name"] = "custom"
        if isinstance(model, str):
            raw["model"]["torch" if backend == "torch" else "flax"] = model
        else:
            models[backend] = model
    if isinstance(data, (str, Path)):
        raw["data"].update(name="arrays", path=str(Path(data).resolve()))
    elif data is not None:
        raw["data"].update(name="arrays", path=None)
        dataset = arrays_dataset(data)
    return config_from_dict(raw), models, dataset


def run_training(
    config: Config,
    out_dir: str | Path,
    backend: BackendClass,
    init: Any = None,
    resume: Optional[str | Path] = None,
    overwrite: bool = False,
    models: Optional[dict[str, Any]] = None,
    dataset: Optional[Dataset] = None,
    losses: Optional[dict[str, Any]] = None,
    pause_after: Optional[int] = None,
    reverse_batch_rows: bool = False,
) -> Optional[dict[str, Any]]:
    """Check the device and precision, prepare the run directory, build the backend's state, train.
    Returns the summary record; None on the ranks of a data-parallel run that do not write (rank > 0).

    init: initial weights (loopspec.run.initial_tensors). resume: a checkpoint directory, a run
    directory (its newest checkpoint) or "auto" (this run directory's newest checkpoint when it has
    one, else a fresh start in its place: what a job that may be preempted passes every time).
    overwrite: replace a run already in out_dir. models: backend -> a module passed to fit; dataset:
    arrays passed to fit. pause_after: stop after that update, its checkpoint saved, raising
    loopspec.errors.Paused (paritykit.locate's replays). reverse_batch_rows: each micro-batch's rows in
    reverse order (paritykit.sensitivity's envelope runs).
    """
    out_dir = Path(out_dir)
    if init is None and resume is not None and config.model.name == "custom":  # names from the checkpoint
        quiet = lambda message: None  # noqa: E731  (resolved again, with its checks and warnings, below)
        found = resolve_resume(resume, out_dir, warn=quiet) if str(resume) != "auto" or out_dir.exists() else None
        init = found.prefixed("model") if found is not None else None
    with backend.scope(config) as placement:
        setup = plan_run(config, out_dir, init, backend.name, placement, models, dataset)
        setup.losses = dict(losses or {})
        setup.pause_after = pause_after
        setup.reverse_batch_rows = reverse_batch_rows
        warn = lambda message: console_logger().warning(f"[{backend.name}] {message}")  # noqa: E731
        fits = checkpoint_fits(setup)

        def continues_this_run(found: Checkpoint) -> None:
            check_resumable(found, config)  # another run's config first: the most telling refusal
            fits(found)

        checkpoint = resolve_resume(resume, out_dir, continues_this_run, warn) if resume is not None else None
        if checkpoint is not None:
            check_not_finished(checkpoint, config)
        start_over = str(resume) == "auto" and checkpoint is None and restarts_same_run(out_dir, config)
        claim_run(setup, None if checkpoint is None else checkpoint.path, overwrite or start_over)
        try:
            summary = train(setup, backend(setup), resume=checkpoint)
        finally:
            setup.release()
    return summary if placement.writes else None
