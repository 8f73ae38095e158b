"""The run configuration: one frozen dataclass per section, every key with its default.

Choices are `Literal` types; ranges, list lengths and the choices an option belongs to sit in
each field's metadata (`option(...)`), where loopspec.config.rules reads them. Every section
checks itself when it is constructed, and `Config` checks the rules between sections, so a
config built in Python, from a dict, from a file or with `--set` is validated the same way and
a bad value gives the same one-line ConfigError.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from loopspec.config.rules import (
    FILE_DATASETS,
    GENERATED_DATASETS,
    check_config,
    check_section,
)

Dataset = Literal["intrusion", "synthetic_images", "digits", "idx", "cifar10", "csv", "npz"]
Model = Literal["mlp", "fashion_mlp", "cnn"]
Loss = Literal["cross_entropy", "bce", "focal", "mse", "l1"]
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"]
Schedule = Literal["none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau"]
Monitor = Literal["val_loss", "val_acc", "val_precision", "val_recall", "val_f1", "train_loss"]
Mode = Literal["auto", "min", "max"]
Precision = Literal["fp32", "bf16", "fp16", "fp64"]
Logger = Literal["jsonl", "tensorboard", "csv"]


def option(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    applies: tuple[str, ...] = (),
    **checks: Any,
) -> Any:
    """A config field. `applies`: the values of the section's `name` it belongs to (empty: all).
    `checks`: gt, ge, lt, le (numbers, or each element of a list), length, min_length (lists)."""
    return field(default=default, default_factory=factory, metadata={"applies": applies, "checks": checks})


class Section:
    """Validates a section's own fields on construction (types, choices, ranges, applicability)."""

    key = ""  # the section's dotted key in Config

    def __post_init__(self) -> None:
        check_section(self)


@dataclass(frozen=True)
class DataConfig(Section):
    key = "data"
    name: Dataset = "intrusion"
    path: Optional[str] = option(None, applies=FILE_DATASETS)  # a file or directory
    label_column: str = option("label", applies=("csv",))
    num_samples: int = option(12000, applies=GENERATED_DATASETS, ge=10)
    image_size: int = option(16, applies=("synthetic_images",), ge=8)
    channels: int = option(3, applies=("synthetic_images",), ge=1)
    num_classes: int = option(10, applies=("synthetic_images",), ge=2)
    val_fraction: float = option(0.2, applies=tuple(d for d in Dataset.__args__ if d != "npz"), gt=0.0, lt=1.0)
    seed: int = option(0, ge=0)  # dataset generation and the train/val split
    batch_size: int = option(128, ge=1)
    eval_batch_size: int = option(1024, ge=1)
    shuffle: bool = True
    drop_last: bool = False


@dataclass(frozen=True)
class ModelConfig(Section):
    key = "model"
    name: Model = "mlp"
    hidden: list[int] = option(factory=lambda: [256, 128], applies=("mlp",), min_length=1, ge=1)
    channels: list[int] = option(factory=lambda: [32, 64, 128], applies=("cnn",), length=3, ge=1)
    dropout: float = option(0.3, applies=("mlp",), ge=0.0, lt=1.0)
    dropout_mode: Literal["framework", "parity"] = option("framework", applies=("mlp",))
    # A Linear/Conv bias feeding BatchNorm is cancelled by its mean subtraction: its true
    # gradient is zero and only rounding noise moves it (see README). Off, as in torchvision.
    bias_before_norm: bool = option(False, applies=("mlp", "cnn"))
    batchnorm_momentum: float = option(0.1, applies=("mlp", "cnn"), gt=0.0, le=1.0)  # weight of the new statistic
    batchnorm_eps: float = option(1e-5, applies=("mlp", "cnn"), gt=0.0)
    init: Literal["canonical", "framework"] = "canonical"


@dataclass(frozen=True)
class LossConfig(Section):
    key = "loss"
    name: Loss = "cross_entropy"
    label_smoothing: float = option(0.0, applies=("cross_entropy",), ge=0.0, le=1.0)
    class_weights: Optional[list[float]] = option(None, applies=("cross_entropy", "focal"), min_length=2, ge=0.0)
    pos_weight: Optional[float] = option(None, applies=("bce",), gt=0.0)
    alpha: Optional[float] = option(0.25, applies=("focal",), ge=0.0, le=1.0)  # binary focal; null: no weighting
    gamma: float = option(2.0, applies=("focal",), ge=0.0)


@dataclass(frozen=True)
class OptimizerConfig(Section):
    key = "optimizer"
    name: Optimizer = "adamw"
    lr: float = option(1e-3, gt=0.0)
    weight_decay: Optional[float] = option(None, ge=0.0)  # null: torch's default (adamw 1e-2, the others 0)
    momentum: float = option(0.0, applies=("sgd", "rmsprop"), ge=0.0)
    dampening: float = option(0.0, applies=("sgd",), ge=0.0, le=1.0)
    nesterov: bool = option(False, applies=("sgd",))
    betas: list[float] = option(factory=lambda: [0.9, 0.999], applies=("adam", "adamw"), length=2, ge=0.0, lt=1.0)
    eps: Optional[float] = option(None, applies=("adam", "adamw", "rmsprop", "adagrad"), ge=0.0)  # null: torch's
    amsgrad: bool = option(False, applies=("adam", "adamw"))
    alpha: float = option(0.99, applies=("rmsprop",), ge=0.0, le=1.0)  # smoothing constant
    centered: bool = option(False, applies=("rmsprop",))
    lr_decay: float = option(0.0, applies=("adagrad",), ge=0.0)
    initial_accumulator_value: float = option(0.0, applies=("adagrad",), ge=0.0)


ONECYCLE = ("onecycle",)
PLATEAU = ("plateau",)


@dataclass(frozen=True)
class ScheduleConfig(Section):
    """torch.optim.lr_scheduler's options under torch's names; see README for each schedule."""

    key = "schedule"
    name: Schedule = "none"
    interval: Optional[Literal["step", "epoch"]] = None  # null: per step for warmup_cosine and onecycle, else per epoch
    step_size: int = option(10, applies=("step",), ge=1)
    gamma: float = option(0.1, applies=("step", "multistep", "exponential"), gt=0.0)
    milestones: list[int] = option(factory=list, applies=("multistep",), ge=0)
    T_max: Optional[int] = option(None, applies=("cosine",), ge=1)  # null: the run's length in intervals
    eta_min: float = option(0.0, applies=("cosine", "warmup_cosine"), ge=0.0)
    warmup: int = option(0, applies=("warmup_cosine",), ge=0)  # warm-up length in intervals
    start_factor: float = option(0.0, applies=("warmup_cosine",), ge=0.0, le=1.0)
    total_steps: Optional[int] = option(None, applies=("onecycle", "warmup_cosine"), ge=1)  # null: the run's length
    max_lr: Optional[float] = option(None, applies=ONECYCLE, gt=0.0)  # null: optimizer.lr
    pct_start: float = option(0.3, applies=ONECYCLE, ge=0.0, lt=1.0)
    anneal_strategy: Literal["cos", "linear"] = option("cos", applies=ONECYCLE)
    div_factor: float = option(25.0, applies=ONECYCLE, gt=0.0)
    final_div_factor: float = option(1e4, applies=ONECYCLE, gt=0.0)
    three_phase: bool = option(False, applies=ONECYCLE)
    cycle_momentum: bool = option(True, applies=ONECYCLE)  # drives SGD/RMSprop momentum or Adam beta1
    base_momentum: float = option(0.85, applies=ONECYCLE, ge=0.0, lt=1.0)
    max_momentum: float = option(0.95, applies=ONECYCLE, ge=0.0, lt=1.0)
    monitor: Monitor = option("val_loss", applies=PLATEAU)
    mode: Mode = option("auto", applies=PLATEAU)  # auto: min for losses
    factor: float = option(0.1, applies=PLATEAU, gt=0.0, lt=1.0)
    patience: int = option(10, applies=PLATEAU, ge=0)
    threshold: float = option(1e-4, applies=PLATEAU, ge=0.0)
    threshold_mode: Literal["rel", "abs"] = option("rel", applies=PLATEAU)
    cooldown: int = option(0, applies=PLATEAU, ge=0)
    min_lr: float = option(0.0, applies=PLATEAU, ge=0.0)


@dataclass(frozen=True)
class EarlyStoppingConfig(Section):
    key = "train.early_stopping"
    enabled: bool = False
    monitor: Monitor = "val_loss"
    mode: Mode = "auto"  # auto: min for losses, max for the rest
    patience: int = option(5, ge=1)
    min_delta: float = option(0.0, ge=0.0)
    restore_best_weights: bool = True


@dataclass(frozen=True)
class LossScaleConfig(Section):
    """Dynamic loss scaling for fp16: torch.amp.GradScaler's options and defaults."""

    key = "train.loss_scale"
    init_scale: float = option(65536.0, gt=0.0)
    growth_factor: float = option(2.0, gt=1.0)
    backoff_factor: float = option(0.5, gt=0.0, lt=1.0)
    growth_interval: int = option(2000, ge=1)


@dataclass(frozen=True)
class CheckpointConfig(Section):
    """When the complete training state is saved to out/checkpoints/ (loopspec/checkpoint.py)."""

    key = "train.checkpoint"
    every_steps: Optional[int] = option(None, ge=1)  # also every N applied updates
    every_epoch: bool = True  # after every validation
    keep_last: int = option(2, ge=1)  # the newest N are kept, and the best by the early-stopping monitor


@dataclass(frozen=True)
class TrainConfig(Section):
    key = "train"
    epochs: int = option(10, ge=1)
    max_steps: Optional[int] = option(None, ge=1)  # stop after this many optimizer steps
    precision: Precision = "fp32"  # bf16 and fp16 are mixed: float32 weights, low-precision compute
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)  # fp16 only
    tf32: bool = False  # fp32 matmuls on a GPU: false keeps full float32 (strict parity), true allows TF32
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    devices: Union[int, Literal["auto"]] = option(1, ge=1)  # data-parallel replicas (torchrun ranks / JAX devices)
    verbose: Optional[int] = option(
        None, ge=0, le=2
    )  # 0 silent, 1 bars (terminal), 2 epoch lines; null: 1 on a terminal, else 2
    log_every: int = option(50, ge=0)  # off the bar: a step line every N steps (0: never)
    loggers: list[Logger] = option(factory=lambda: ["jsonl"])  # metrics.jsonl always; also tensorboard, csv
    accumulation_steps: int = option(1, ge=1)  # micro-batches per optimizer update (their gradients are averaged)
    accumulation: Literal["manual", "multisteps"] = (
        "manual"  # JAX: one jitted step scans the window, or optax.MultiSteps
    )
    clip_grad_norm: Optional[float] = option(None, gt=0.0)  # torch's clip_grad_norm_
    clip_grad_value: Optional[float] = option(None, gt=0.0)  # clamp every gradient element to [-v, v]
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop (saving the weights) or skip
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass(frozen=True)
class Config:
    seed: int = option(0, ge=0, le=2**32 - 1)  # weight init, dropout, batch order; JAX keys take 32 bits
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Every key as JSON holds it (lists for tuples): what config.json and checkpoints save."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
