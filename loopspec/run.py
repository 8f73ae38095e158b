"""What a run needs before training, framework-neutral: the data checked against the model
and loss, the initial weights, the schedule plan and the run directory with its config.json."""

from __future__ import annotations

import fcntl
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import numpy as np

from loopspec.batching import batches_per_epoch
from loopspec.checkpoint import load_checkpoint
from loopspec.checkpoint_checks import BUFFER_SUFFIXES, check_fits
from loopspec.config import Config, LossConfig, resolved_config
from loopspec.data import Dataset, load_dataset
from loopspec.dropout import parity_dropout_masks
from loopspec.errors import ConfigError, UserError
from loopspec.files import write_json_atomic
from loopspec.memory import check_generated_data, check_model
from loopspec.models import check_model_input, output_dim, state_dict_shapes
from loopspec.parallel import Placement, check_shards
from loopspec.preprocessing import save_preprocessing
from loopspec.schedules import SchedulePlan, plan_schedule, schedule_horizon
from loopspec.sinks import check_loggers
from loopspec.weights import canonical_init, load_weights


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
    schedule_horizon: int  # intervals the schedule's shape spans: T_max (cosine) or total_steps
    lock: Optional[TextIO] = None  # held while the run writes its directory
    placement: Placement = field(default_factory=Placement)  # this process's replica; only rank 0 writes

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()

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

    def dropout_masks(self, forward_pass: int, batch_size: int) -> Optional[list[np.ndarray]]:
        """Parity-mode masks for one training forward pass; None in framework mode."""
        if not self.parity_dropout:
            return None
        shapes = [(batch_size, width) for width in self.config.model.hidden]
        return parity_dropout_masks(self.config.seed, forward_pass, shapes, self.config.model.dropout)


def prepare_run(
    config: Config,
    out_dir: str | Path,
    init_path: str | Path | None,
    backend: str,
    resumed_from: Optional[Path] = None,
    overwrite: bool = False,
    placement: Optional[Placement] = None,
) -> RunSetup:
    """plan_run, then claim_run: everything checked, then the run directory claimed and written."""
    setup = plan_run(config, out_dir, init_path, backend, placement)
    claim_run(setup, resumed_from, overwrite)
    return setup


def plan_run(
    config: Config,
    out_dir: str | Path,
    init_path: str | Path | None,
    backend: str,
    placement: Optional[Placement] = None,
) -> RunSetup:
    """Load data, check it fits the model, resolve initial weights, plan the schedule; nothing is written."""
    check_generated_data(config)
    check_loggers(config.train.loggers)
    dataset = load_dataset(config.data)
    check_model_input(config.model, dataset.input_shape, config.loss.name, dataset.num_classes)
    check_loss_options(config, dataset)
    check_monitors(config, dataset)
    check_batch_sizes(config, len(dataset.y_train))
    plan = plan_schedule(config, len(dataset.y_train))
    out_dim = output_dim(config.loss.name, dataset.num_classes)
    shapes = state_dict_shapes(config.model, dataset.input_shape, out_dim)
    check_model(config, shapes, dataset.input_shape, len(dataset.y_train))
    if init_path is not None:
        initial = load_weights(init_path, shapes)
    elif config.model.init == "canonical":
        initial = canonical_init(shapes, config.seed)
    else:
        initial = None
    out_dir, lock, placement = Path(out_dir), None, placement or Placement()
    data = config.data
    check_shards(data.batch_size, len(dataset.y_train), data.drop_last, placement.replicas, config.model.name)
    horizon = schedule_horizon(config, plan)
    return RunSetup(config, dataset, out_dir, backend, out_dim, shapes, initial, plan, horizon, lock, placement)


def claim_run(setup: RunSetup, resumed_from: Optional[Path], overwrite: bool) -> None:
    """Claim the run directory (refusing another run's unless continuing it from `resumed_from`, a
    checkpoint, or told to overwrite it) and write config.json, run.json and preprocessing.json."""
    if not setup.placement.writes:
        return
    out_dir, dataset = setup.out_dir, setup.dataset
    setup.lock = claim_run_directory(out_dir, resumed_from, overwrite)
    write_json_atomic(out_dir / "config.json", resolved_config(setup.config))
    # What rebuilding the model needs without reloading the data (loopspec.results.load_run).
    facts = {"backend": setup.backend, "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes}
    write_json_atomic(out_dir / "run.json", facts)
    save_preprocessing(out_dir, dataset.preprocessing)


def checkpoint_fits(setup: RunSetup) -> Callable[[Any], None]:
    """What a checkpoint must satisfy to continue this run (loopspec.checkpoint_checks.check_fits)."""
    config, data = setup.config, setup.config.data
    batches = batches_per_epoch(len(setup.dataset.y_train), data.batch_size, data.drop_last)
    parameters = [name for name in setup.weight_shapes if not name.endswith(BUFFER_SUFFIXES)]
    return lambda checkpoint: check_fits(
        checkpoint, config, setup.weight_shapes, parameters, setup.plan.updates_per_epoch, batches
    )


RUN_FILES = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "metrics_steps.csv",
    "metrics_epochs.csv",
    "tensorboard",
    "init.safetensors",
    "final.safetensors",
    "best.safetensors",
    "preprocessing.json",
)


def claim_run_directory(out_dir: Path, resumed_from: Optional[Path], overwrite: bool) -> TextIO:
    """Lock the run directory for this process. Only its own run writes there: a fresh run needs an
    empty directory; a resumed one its checkpoint's own run directory (from its newest checkpoint) or
    an empty one. Anything else is refused with one line, nothing touched, unless `overwrite`, which
    removes the other run's files (resuming from an older checkpoint of its own: the newer ones)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a directory; choose another run directory")
    held = [name for name in (*RUN_FILES, "checkpoints") if (out_dir / name).exists()]
    own = resumed_from is not None and Path(resumed_from).resolve().parent.parent == out_dir.resolve()
    newer = newer_checkpoints(out_dir, Path(resumed_from)) if own else []
    if not overwrite:
        refuse_foreign_directory(out_dir, held, resumed_from, own, newer)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / ".lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(
            f"--out {out_dir} is in use by another training process; wait for it or choose another directory"
        ) from None
    if overwrite:
        for target in newer if own else [out_dir / name for name in held]:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return lock


def newer_checkpoints(out_dir: Path, checkpoint: Path) -> list[Path]:
    """Valid checkpoints of the run directory saved after `checkpoint` (another continuation's future;
    a damaged one, which resuming the directory skips, is none)."""
    name = checkpoint.resolve().name
    return [path for path in sorted((out_dir / "checkpoints").glob("step-*")) if path.name > name and loads(path)]


def loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except UserError:
        return False
    return True


def refuse_foreign_directory(
    out_dir: Path, held: list[str], resumed_from: Optional[Path], own: bool, newer: list[Path]
) -> None:
    if resumed_from is None and held:
        raise UserError(
            f"--out {out_dir} holds another run ({', '.join(held[:3])}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another directory"
        )
    if resumed_from is not None and not own and held:
        source = Path(resumed_from).resolve().parent.parent
        raise UserError(
            f"--out {out_dir} holds another run ({', '.join(held[:3])}), and --resume {resumed_from} continues "
            f"the run in {source}: resume into {source} itself or an empty directory, or pass --overwrite to "
            f"replace {out_dir}"
        )
    if newer:
        raise UserError(
            f"{out_dir} has checkpoints newer than {Path(resumed_from).name} ({', '.join(p.name for p in newer[:3])}): "
            "continuing from an older one would mix two continuations in one directory; resume from the newest "
            f"(--resume {out_dir}), into an empty directory, or pass --overwrite to discard the newer checkpoints"
        )


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
                f"focal loss uses {'one logit' if one_logit else 'one logit per class'}; {instead}"
            )
    if loss.class_weights is not None and len(loss.class_weights) != dataset.num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(loss.class_weights)} entries; "
            f"dataset {dataset.name} has {dataset.num_classes} classes"
        )


BINARY_METRICS = ("val_precision", "val_recall", "val_f1")  # of class 1: defined for binary tasks only


def check_monitors(config: Config, dataset: Dataset) -> None:
    """A monitored metric must be one the task records (precision, recall and F1 are of class 1)."""
    monitors = {"train.early_stopping.monitor": config.train.early_stopping.monitor}
    if config.schedule.name == "plateau":
        monitors["schedule.monitor"] = config.schedule.monitor
    for key, monitor in monitors.items():
        if monitor in BINARY_METRICS and dataset.num_classes != 2:
            raise ConfigError(
                f"{key} {monitor} needs a binary task ({monitor[4:]} is of class 1); dataset "
                f"{dataset.name} has {dataset.num_classes} classes: use val_loss, val_acc or train_loss"
            )


def check_batch_sizes(config: Config, num_train: int) -> None:
    """Reject, before training, a batch torch's BatchNorm1d would refuse mid-run (one sample)."""
    data = config.data
    if data.drop_last and num_train < data.batch_size:
        raise ConfigError(
            f"data.drop_last with batch_size {data.batch_size} leaves no batch: "
            f"the training split has {num_train} samples"
        )
    if config.model.name == "mlp" and not data.drop_last and num_train % data.batch_size == 1:
        raise ConfigError(
            f"the last training batch would hold 1 sample ({num_train} samples, batch_size {data.batch_size}), "
            "which BatchNorm1d cannot normalise; set data.drop_last: true or change data.batch_size"
        )
