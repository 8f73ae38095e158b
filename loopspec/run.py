"""What a training run does outside the framework: set-up, records, early stopping, summary.

Each backend's `train.py` owns its loop (forward, backward, update) and calls into this
module for everything framework-neutral, so the two loops cannot drift apart in what they
log, when they stop, or which weights they save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from loopspec.config import Config, LossConfig
from loopspec.data import Dataset, load_dataset
from loopspec.dropout import parity_dropout_masks
from loopspec.early_stopping import EarlyStopping
from loopspec.errors import ConfigError, TrainingDiverged
from loopspec.metrics import MetricsWriter, classification_metrics, predictions, write_json_atomic
from loopspec.schedules import SchedulePlan, plan_schedule, schedule_length
from loopspec.weights import (
    canonical_init,
    check_model_input,
    load_weights,
    output_dim,
    save_weights,
    state_dict_shapes,
)


@dataclass
class RunSetup:
    config: Config
    dataset: Dataset
    out_dir: Path
    backend: str
    out_dim: int
    weight_shapes: dict[str, tuple[int, ...]]
    initial_weights: Optional[dict[str, np.ndarray]]  # canonical layout; None: framework init
    plan: SchedulePlan
    schedule_length: int  # T_max (cosine) or total_steps (onecycle, warmup_cosine), in intervals

    @property
    def cycles_momentum(self) -> bool:
        return self.config.schedule.name == "onecycle" and self.config.schedule.cycle_momentum

    @property
    def parity_dropout(self) -> bool:
        model = self.config.model
        return model.name == "mlp" and model.dropout > 0 and model.dropout_mode == "parity"

    @property
    def clipping(self) -> bool:
        return self.config.train.clip_grad_norm is not None or self.config.train.clip_grad_value is not None

    def step_values(self, out: dict[str, Any]) -> dict[str, Any]:
        """What a step record holds, from a backend's train-step output (floats and bools)."""
        values = {"loss": float(out["loss"]), "lr": float(out["lr"]), "grad_norm": float(out["grad_norm"])}
        if self.cycles_momentum:
            values["momentum"] = float(out["momentum"])
        if self.clipping:
            values["clipped"] = bool(out["clipped"])
        if self.config.train.precision == "fp16":
            values["loss_scale"] = float(out["loss_scale"])
        return values

    def dropout_masks(self, forward_pass: int, batch_size: int) -> Optional[list[np.ndarray]]:
        """Parity-mode masks for one training forward pass; None in framework mode."""
        if not self.parity_dropout:
            return None
        shapes = [(batch_size, width) for width in self.config.model.hidden]
        return parity_dropout_masks(self.config.seed, forward_pass, shapes, self.config.model.dropout)


def prepare_run(config: Config, out_dir: str | Path, init_path: str | Path | None, backend: str) -> RunSetup:
    """Load data, check it fits the model, resolve initial weights, write config.json."""
    dataset = load_dataset(config.data)
    check_model_input(config.model, dataset.input_shape, config.loss.name, dataset.num_classes)
    check_loss_options(config, dataset)
    check_batch_sizes(config, len(dataset.y_train))
    plan = plan_schedule(config, len(dataset.y_train))
    out_dim = output_dim(config.loss.name, dataset.num_classes)
    shapes = state_dict_shapes(config.model, dataset.input_shape, out_dim)
    if init_path is not None:
        initial = load_weights(init_path, shapes)
    elif config.model.init == "canonical":
        initial = canonical_init(shapes, config.seed)
    else:
        initial = None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config.json", config.to_dict())
    return RunSetup(config, dataset, out_dir, backend, out_dim, shapes, initial, plan, schedule_length(config, plan))


# Focal loss options that fit one output layout only: (option, one logit?) -> what to use instead.
# One logit is the binary sigmoid focal loss; one logit per class the softmax form.
FOCAL_LAYOUT_OPTIONS = {
    ("alpha", False): "the softmax focal loss weights classes with loss.class_weights (set loss.alpha: null)",
    ("class_weights", True): "the one-logit (sigmoid) focal loss weights class 1 with loss.alpha",
}


def check_loss_options(config: Config, dataset: Dataset) -> None:
    """Reject a loss option the task cannot use, once the data says binary or multi-class."""
    loss, defaults = config.loss, LossConfig()
    one_logit = output_dim(loss.name, dataset.num_classes) == 1
    for (option, layout), instead in FOCAL_LAYOUT_OPTIONS.items():
        if loss.name == "focal" and one_logit == layout and getattr(loss, option) != getattr(defaults, option):
            raise ConfigError(
                f"loss.{option} does not apply: dataset {dataset.name} has {dataset.num_classes} classes, so the "
                f"focal loss uses {'one logit' if one_logit else 'one logit per class'}; {instead}")
    if loss.class_weights is not None and len(loss.class_weights) != dataset.num_classes:
        raise ConfigError(f"loss.class_weights has {len(loss.class_weights)} entries; "
                          f"dataset {dataset.name} has {dataset.num_classes} classes")


def check_batch_sizes(config: Config, num_train: int) -> None:
    """Reject, before training, a batch torch's BatchNorm1d would refuse mid-run (one sample)."""
    data = config.data
    if data.drop_last and num_train < data.batch_size:
        raise ConfigError(f"data.drop_last with batch_size {data.batch_size} leaves no batch: the training split has {num_train} samples")
    if config.model.name == "mlp" and not data.drop_last and num_train % data.batch_size == 1:
        raise ConfigError(
            f"the last training batch would hold 1 sample ({num_train} samples, batch_size {data.batch_size}), "
            "which BatchNorm1d cannot normalise; set data.drop_last: true or change data.batch_size"
        )


def validation_metrics(loss_sum: float, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """val_loss (sample-weighted mean of batch losses), accuracy and binary P/R/F1."""
    metrics = {"val_loss": loss_sum / len(labels)}
    metrics.update(classification_metrics(labels, predictions(logits), num_classes))
    return metrics


def monitored_value(monitor: str, train_loss: float, val: dict[str, float]) -> float:
    """The epoch's value of a monitor name (early stopping, plateau schedule)."""
    return train_loss if monitor == "train_loss" else val[monitor]


class RunRecorder:
    """Writes metrics.jsonl, prints progress, decides early stopping and what a non-finite
    update does, saves the weights."""

    def __init__(self, setup: RunSetup):
        self.setup = setup
        self.tag = f"[{setup.backend}]"
        self.train_cfg = setup.config.train
        self.writer = MetricsWriter(setup.out_dir / "metrics.jsonl")
        self.stopper = EarlyStopping(self.train_cfg.early_stopping)
        self.epoch_records: list[dict[str, Any]] = []
        self.epoch_losses: list[float] = []
        self.epoch_skipped = 0
        self.skipped = 0
        self.stopped_by: Optional[str] = None
        self.started = time.perf_counter()
        self.epoch_started = self.started

    @property
    def keep_best_weights(self) -> bool:
        es = self.train_cfg.early_stopping
        return es.enabled and es.restore_best_weights

    def save_initial_weights(self, tensors: dict[str, np.ndarray]) -> None:
        save_weights(self.setup.out_dir / "init.safetensors", tensors, {"backend": self.setup.backend})

    def record_update(self, epoch: int, step: int, values: dict[str, Any]) -> None:
        """One applied optimizer update: loss, lr, grad_norm (and momentum, clipped)."""
        self.writer.write({"kind": "step", "step": step, "epoch": epoch, **values, "skipped": False})
        self.epoch_losses.append(values["loss"])
        every = self.train_cfg.log_every
        if every and step % every == 0:
            print(f"{self.tag} epoch {epoch} step {step} loss {values['loss']:.6g} lr {values['lr']:.4g} "
                  f"grad_norm {values['grad_norm']:.4g}", flush=True)

    def overflow_skip(self, epoch: int, step: int, lr: float, loss_scale: float) -> None:
        """fp16: gradients overflowed at this loss scale; the update is skipped, the scale backs off."""
        self.writer.write({"kind": "step", "step": step, "epoch": epoch, "lr": float(lr), "loss_scale": float(loss_scale),
                           "skipped": True, "overflow": True})
        self.skipped += 1
        self.epoch_skipped += 1

    def nonfinite_update(self, epoch: int, step: int, lr: float, loss: float, grad_norm: float,
                         bad_inputs: bool, weights: Callable[[], dict[str, np.ndarray]]) -> None:
        """A non-finite loss or gradient: record a skipped update, or save and stop (raises)."""
        self.writer.write({"kind": "step", "step": step, "epoch": epoch, "lr": lr, "skipped": True})
        self.skipped += 1
        self.epoch_skipped += 1
        where = f"update {step + 1} (epoch {epoch})"
        if self.train_cfg.on_nonfinite == "skip":
            print(f"{self.tag} skipped {where}: non-finite loss {loss} or gradient norm {grad_norm}", flush=True)
            return
        causes = (f"the input batch holds NaN/inf values" if bad_inputs else
                  f"the learning rate ({lr:.3g}) may be too high, the data may hold extreme values, "
                  f"or {self.setup.config.train.precision} precision overflowed")
        self.stopped_by = "nonfinite"
        self.finish(weights(), step, restored_best=False)
        raise TrainingDiverged(
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at {where}; likely cause: {causes}. "
            f"Weights from before this update saved to {self.setup.out_dir / 'final.safetensors'}; "
            "set train.on_nonfinite: skip to skip such updates instead"
        )

    def record_epoch(self, epoch: int, step: int, val: dict[str, float]) -> bool:
        """Write the epoch record and update early stopping; True when this epoch is the new best."""
        now = time.perf_counter()
        train_loss = float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan")
        record = {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": train_loss, **val,
                  "skipped": self.epoch_skipped, "seconds": round(now - self.epoch_started, 3)}
        self.epoch_started, self.epoch_losses, self.epoch_skipped = now, [], 0
        improved = self.stopper.update(monitored_value(self.stopper.cfg.monitor, train_loss, val), epoch)
        self.writer.write(record)
        self.epoch_records.append(record)
        shown = " ".join(f"{k} {v:.4f}" for k, v in val.items())
        print(f"{self.tag} epoch {epoch}/{self.train_cfg.epochs} step {step} train_loss {train_loss:.4f} {shown}"
              f"{' *' if improved else ''} ({record['seconds']:.1f}s)", flush=True)
        return improved

    @property
    def train_loss(self) -> float:
        """The last epoch's mean training loss."""
        return self.epoch_records[-1]["train_loss"]

    @property
    def should_stop(self) -> bool:
        return self.stopper.should_stop

    def reached_max_steps(self, step: int) -> bool:
        return self.train_cfg.max_steps is not None and step >= self.train_cfg.max_steps

    def finish(self, final_weights: dict[str, np.ndarray], steps: int, restored_best: bool) -> dict[str, Any]:
        """Save final.safetensors and the summary record; returns the summary."""
        if self.stopped_by is None and self.should_stop:
            self.stopped_by = "early_stopping"
        last_epoch = self.epoch_records[-1]["epoch"] if self.epoch_records else 0
        final_epoch = self.stopper.best_epoch if restored_best else last_epoch
        final_val = next((r for r in self.epoch_records if r["epoch"] == final_epoch), {})
        save_weights(self.setup.out_dir / "final.safetensors", final_weights,
                     {"backend": self.setup.backend, "epoch": str(final_epoch)})
        summary = {
            "kind": "summary",
            "backend": self.setup.backend,
            "steps": steps,
            "epochs": last_epoch,
            "stopped_by": self.stopped_by,
            "stopped_early": self.stopped_by == "early_stopping",
            "skipped_updates": self.skipped,
            "best_epoch": self.stopper.best_epoch,
            "monitor": self.stopper.cfg.monitor,
            "best_value": self.stopper.best,
            "restored_best": restored_best,
            "final_epoch": final_epoch,
            **{k: v for k, v in final_val.items() if k.startswith("val_")},
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.writer.write(summary)
        self.writer.close()
        if summary["stopped_early"]:
            print(f"{self.tag} early stopping at epoch {last_epoch}: no {self.stopper.cfg.monitor} improvement "
                  f"for {self.stopper.cfg.patience} epochs; best epoch {self.stopper.best_epoch}", flush=True)
        print(f"{self.tag} done: {steps} steps, final weights from epoch {final_epoch} -> "
              f"{self.setup.out_dir / 'final.safetensors'}", flush=True)
        return summary

    def close(self) -> None:
        self.writer.close()
