"""The run configuration shared by both backends: schema, defaults, loading and validation.

A config is a YAML or TOML file whose sections mirror the dataclasses below. Every key has
a default, so a file only names what it changes. `--set a.b=value` overrides any key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from loopspec.errors import ConfigError

DATASETS = ("intrusion", "synthetic_images", "digits", "idx", "cifar10", "csv", "npz")
FILE_DATASETS = ("idx", "cifar10", "csv", "npz")
MODELS = ("mlp", "fashion_mlp", "cnn")
LOSSES = ("cross_entropy", "bce", "focal", "mse", "l1")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle", "plateau")
INTERVALS = ("step", "epoch")
STEP_INTERVAL_SCHEDULES = ("warmup_cosine", "onecycle")  # the rest step per epoch by default
PRECISIONS = ("fp32", "bf16", "fp16", "fp64")
DTYPES = {"float32": "fp32", "float64": "fp64"}  # the CLI's --dtype shorthand
DEVICES = ("cpu", "cuda", "auto")
DROPOUT_MODES = ("framework", "parity")
INITS = ("canonical", "framework")
ACCUMULATIONS = ("manual", "multisteps")
NONFINITE = ("stop", "skip")
MONITORS = ("val_loss", "val_acc", "val_precision", "val_recall", "val_f1", "train_loss")
MODES = ("auto", "min", "max")


@dataclass
class DataConfig:
    name: str = "intrusion"
    path: Optional[str] = None  # file datasets: a file or directory
    label_column: str = "label"  # csv
    num_samples: int = 12000  # generated datasets (intrusion, synthetic_images)
    image_size: int = 16  # synthetic_images
    channels: int = 3  # synthetic_images
    num_classes: int = 10  # synthetic_images
    val_fraction: float = 0.2  # ignored by npz, which brings its own split
    seed: int = 0  # dataset generation and the train/val split
    batch_size: int = 128
    eval_batch_size: int = 1024
    shuffle: bool = True
    drop_last: bool = False


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # mlp
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # cnn
    dropout: float = 0.3  # mlp
    dropout_mode: str = "framework"
    # A Linear/Conv bias feeding BatchNorm is cancelled by its mean subtraction: its true
    # gradient is zero and only rounding noise moves it (see README). Off, as in torchvision.
    bias_before_norm: bool = False
    batchnorm_momentum: float = 0.1  # torch's convention: weight of the new batch statistic
    batchnorm_eps: float = 1e-5
    init: str = "canonical"


@dataclass
class LossConfig:
    name: str = "cross_entropy"
    label_smoothing: float = 0.0  # cross_entropy
    class_weights: Optional[list[float]] = None  # cross_entropy, multi-class focal
    pos_weight: Optional[float] = None  # bce
    alpha: Optional[float] = 0.25  # binary focal; null turns the class weighting off
    gamma: float = 2.0  # focal


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: Optional[float] = None  # null: torch's default (adamw 1e-2, the others 0)
    momentum: float = 0.0  # sgd, rmsprop
    dampening: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: Optional[float] = None  # null: torch's default (1e-8; adagrad 1e-10)
    amsgrad: bool = False  # adam, adamw
    alpha: float = 0.99  # rmsprop smoothing constant
    centered: bool = False  # rmsprop
    lr_decay: float = 0.0  # adagrad
    initial_accumulator_value: float = 0.0  # adagrad


@dataclass
class ScheduleConfig:
    """torch.optim.lr_scheduler's options under torch's names; see README for each schedule."""

    name: str = "none"
    interval: Optional[str] = None  # step | epoch; null: per step for warmup_cosine and onecycle, else per epoch
    step_size: int = 10  # step
    gamma: float = 0.1  # step, multistep, exponential
    milestones: list[int] = field(default_factory=list)  # multistep
    T_max: Optional[int] = None  # cosine; null: the run's length in intervals
    eta_min: float = 0.0  # cosine, warmup_cosine: the floor
    warmup: int = 0  # warmup_cosine: warm-up length in intervals
    start_factor: float = 0.0  # warmup_cosine: the warm-up starts at lr * start_factor
    total_steps: Optional[int] = None  # onecycle, warmup_cosine; null: the run's length in intervals
    max_lr: Optional[float] = None  # onecycle; null: optimizer.lr
    pct_start: float = 0.3  # onecycle
    anneal_strategy: str = "cos"  # onecycle: cos | linear
    div_factor: float = 25.0  # onecycle
    final_div_factor: float = 1e4  # onecycle
    three_phase: bool = False  # onecycle
    cycle_momentum: bool = True  # onecycle: drives SGD/RMSprop momentum or Adam beta1
    base_momentum: float = 0.85  # onecycle
    max_momentum: float = 0.95  # onecycle
    monitor: str = "val_loss"  # plateau
    mode: str = "auto"  # plateau: min | max | auto (min for losses)
    factor: float = 0.1  # plateau
    patience: int = 10  # plateau
    threshold: float = 1e-4  # plateau
    threshold_mode: str = "rel"  # plateau: rel | abs
    cooldown: int = 0  # plateau
    min_lr: float = 0.0  # plateau


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    mode: str = "auto"  # auto: min for losses, max for the rest
    patience: int = 5
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass
class LossScaleConfig:
    """Dynamic loss scaling for fp16: torch.amp.GradScaler's options and defaults."""

    init_scale: float = 65536.0
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: Optional[int] = None  # stop after this many optimizer steps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed: float32 weights, low-precision compute) | fp64
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)  # fp16 only
    tf32: bool = False  # fp32 matmuls on a GPU: false keeps full float32 (strict parity), true allows TF32 (speed)
    device: str = "cpu"
    log_every: int = 50  # print a progress line every N steps (0: never)
    accumulation_steps: int = 1  # micro-batches per optimizer update (their gradients are averaged)
    accumulation: str = "manual"  # JAX: manual (one jitted step scans the window) | multisteps (optax.MultiSteps)
    clip_grad_norm: Optional[float] = None  # clip the global gradient norm to this (torch's clip_grad_norm_)
    clip_grad_value: Optional[float] = None  # clamp every gradient element to [-v, v]
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop (saving the weights) | skip the update
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class Config:
    seed: int = 0  # weight init, dropout and batch order
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Which optimizer and loss each option belongs to: setting one for another is a mistake
# worth reporting (torch itself rejects `momentum` for Adam).
OPTIMIZER_OPTIONS = {
    "momentum": ("sgd", "rmsprop"),
    "dampening": ("sgd",),
    "nesterov": ("sgd",),
    "betas": ("adam", "adamw"),
    "amsgrad": ("adam", "adamw"),
    "alpha": ("rmsprop",),
    "centered": ("rmsprop",),
    "lr_decay": ("adagrad",),
    "initial_accumulator_value": ("adagrad",),
}
LOSS_OPTIONS = {
    "label_smoothing": ("cross_entropy",),
    "class_weights": ("cross_entropy", "focal"),
    "pos_weight": ("bce",),
    "alpha": ("focal",),
    "gamma": ("focal",),
}
SCHEDULE_OPTIONS = {
    "step_size": ("step",),
    "gamma": ("step", "multistep", "exponential"),
    "milestones": ("multistep",),
    "T_max": ("cosine",),
    "eta_min": ("cosine", "warmup_cosine"),
    "warmup": ("warmup_cosine",),
    "start_factor": ("warmup_cosine",),
    "total_steps": ("onecycle", "warmup_cosine"),
    **{key: ("onecycle",) for key in ("max_lr", "pct_start", "anneal_strategy", "div_factor", "final_div_factor",
                                      "three_phase", "cycle_momentum", "base_momentum", "max_momentum")},
    **{key: ("plateau",) for key in ("monitor", "mode", "factor", "patience", "threshold", "threshold_mode",
                                     "cooldown", "min_lr")},
}
TORCH_DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2}
TORCH_DEFAULT_EPS = {"adagrad": 1e-10}

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML/TOML config, apply `key=value` overrides and validate everything."""
    raw = read_config_file(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):  # JSON is YAML: a run's config.json reloads
            raw = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot parse {path}: {first_line}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (so lists work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any]) -> Config:
    config = _build(Config, raw, prefix="")
    validate(config)
    return config


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a section (mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in names]
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}; allowed keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(names)
        )
    values = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = _coerce(raw[name], hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], key)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {item_type.__name__}, got {value!r}")
        return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads `1e-3` as a string; accept numeric strings, reject the rest.
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")  # a schema bug, not a user error


def _choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Cross-field checks; raises ConfigError with one line naming the problem."""
    data, model, loss, opt, train = config.data, config.model, config.loss, config.optimizer, config.train
    validate_schedule(config.schedule, opt)
    _choice(data.name, DATASETS, "dataset (data.name)")
    _choice(model.name, MODELS, "model (model.name)")
    _choice(model.dropout_mode, DROPOUT_MODES, "model.dropout_mode")
    _choice(model.init, INITS, "model.init")
    _choice(loss.name, LOSSES, "loss (loss.name)")
    _choice(opt.name, OPTIMIZERS, "optimizer (optimizer.name)")
    _choice(train.precision, PRECISIONS, "train.precision")
    scaling = train.loss_scale
    _check(scaling.init_scale > 0 and scaling.growth_factor > 1.0 and 0.0 < scaling.backoff_factor < 1.0,
           "train.loss_scale needs init_scale > 0, growth_factor > 1 and backoff_factor in (0, 1)")
    _check(scaling.growth_interval >= 1, f"train.loss_scale.growth_interval must be >= 1, got {scaling.growth_interval}")
    _check(train.precision != "fp16" or train.accumulation == "manual" or train.accumulation_steps == 1,
           "fp16 with accumulation needs train.accumulation: manual; optax.MultiSteps cannot skip an overflowing "
           "window (its accumulator reset multiplies by zero, and 0 * inf is NaN)")
    _choice(train.device, DEVICES, "train.device")
    _choice(train.early_stopping.monitor, MONITORS, "train.early_stopping.monitor")
    _choice(train.early_stopping.mode, MODES, "train.early_stopping.mode")

    if data.name in FILE_DATASETS:
        _check(data.path is not None, f"data.path is required for dataset {data.name!r}")
    _check(0.0 < data.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {data.val_fraction}")
    _check(data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}")
    _check(data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {data.eval_batch_size}")
    _check(data.num_samples >= 10, f"data.num_samples must be >= 10, got {data.num_samples}")
    _check(data.num_classes >= 2, f"data.num_classes must be >= 2, got {data.num_classes}")
    _check(data.image_size >= 8, f"data.image_size must be >= 8, got {data.image_size}")
    _check(data.channels >= 1, f"data.channels must be >= 1, got {data.channels}")

    _check(len(model.hidden) >= 1 and min(model.hidden) >= 1, f"model.hidden must be a non-empty list of positive widths, got {model.hidden}")
    _check(len(model.channels) == 3 and min(model.channels) >= 1, f"model.channels must list 3 positive widths (one per conv block), got {model.channels}")
    _check(0.0 <= model.dropout < 1.0, f"model.dropout must be in [0, 1), got {model.dropout}")
    _check(0.0 < model.batchnorm_momentum <= 1.0, f"model.batchnorm_momentum must be in (0, 1], got {model.batchnorm_momentum}")
    _check(model.batchnorm_eps > 0, f"model.batchnorm_eps must be > 0, got {model.batchnorm_eps}")

    _check(0.0 <= loss.label_smoothing <= 1.0, f"loss.label_smoothing must be in [0, 1], got {loss.label_smoothing}")
    _check(loss.gamma >= 0, f"loss.gamma must be >= 0, got {loss.gamma}")
    _check(loss.alpha is None or 0.0 <= loss.alpha <= 1.0, f"loss.alpha must be in [0, 1] or null, got {loss.alpha}")
    _check(loss.pos_weight is None or loss.pos_weight > 0, f"loss.pos_weight must be > 0, got {loss.pos_weight}")
    _check(loss.class_weights is None or min(loss.class_weights) >= 0, "loss.class_weights must be non-negative")
    _reject_foreign_options(loss, LossConfig(), LOSS_OPTIONS, loss.name, "loss")

    _check(opt.lr > 0, f"optimizer.lr must be > 0, got {opt.lr}")
    _check(opt.weight_decay is None or opt.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {opt.weight_decay}")
    _check(opt.momentum >= 0, f"optimizer.momentum must be >= 0, got {opt.momentum}")
    _check(not opt.nesterov or (opt.momentum > 0 and opt.dampening == 0), "optimizer.nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD)")
    _check(len(opt.betas) == 2 and all(0.0 <= b < 1.0 for b in opt.betas), f"optimizer.betas must be two numbers in [0, 1), got {opt.betas}")
    _check(opt.eps is None or opt.eps >= 0, f"optimizer.eps must be >= 0, got {opt.eps}")
    _check(0.0 <= opt.alpha <= 1.0, f"optimizer.alpha must be in [0, 1], got {opt.alpha}")
    _check(opt.lr_decay >= 0, f"optimizer.lr_decay must be >= 0, got {opt.lr_decay}")
    _check(opt.initial_accumulator_value >= 0, f"optimizer.initial_accumulator_value must be >= 0, got {opt.initial_accumulator_value}")
    _reject_foreign_options(opt, OptimizerConfig(), OPTIMIZER_OPTIONS, opt.name, "optimizer")

    _check(train.epochs >= 1, f"train.epochs must be >= 1, got {train.epochs}")
    _check(train.max_steps is None or train.max_steps >= 1, f"train.max_steps must be >= 1 or null, got {train.max_steps}")
    _check(train.log_every >= 0, f"train.log_every must be >= 0, got {train.log_every}")
    _choice(train.accumulation, ACCUMULATIONS, "train.accumulation")
    _choice(train.on_nonfinite, NONFINITE, "train.on_nonfinite")
    _check(train.accumulation_steps >= 1, f"train.accumulation_steps must be >= 1, got {train.accumulation_steps}")
    _check(train.clip_grad_norm is None or train.clip_grad_norm > 0, f"train.clip_grad_norm must be > 0, got {train.clip_grad_norm}")
    _check(train.clip_grad_value is None or train.clip_grad_value > 0, f"train.clip_grad_value must be > 0, got {train.clip_grad_value}")
    _check(train.clip_grad_norm is None or train.clip_grad_value is None,
           "set one of train.clip_grad_norm and train.clip_grad_value, not both")
    _check(train.early_stopping.patience >= 1, f"train.early_stopping.patience must be >= 1, got {train.early_stopping.patience}")
    _check(train.early_stopping.min_delta >= 0, f"train.early_stopping.min_delta must be >= 0, got {train.early_stopping.min_delta}")


def validate_schedule(sched: ScheduleConfig, opt: OptimizerConfig) -> None:
    _choice(sched.name, SCHEDULES, "schedule (schedule.name)")
    if sched.interval is not None:
        _choice(sched.interval, INTERVALS, "schedule.interval")
    _choice(sched.anneal_strategy, ("cos", "linear"), "schedule.anneal_strategy")
    _choice(sched.monitor, MONITORS, "schedule.monitor")
    _choice(sched.mode, MODES, "schedule.mode")
    _choice(sched.threshold_mode, ("rel", "abs"), "schedule.threshold_mode")
    if sched.name == "none":
        _check(sched.interval is None, "schedule.interval needs a schedule (schedule.name)")
    _reject_foreign_options(sched, ScheduleConfig(), SCHEDULE_OPTIONS, sched.name, "schedule")
    _check(sched.name != "plateau" or sched.interval in (None, "epoch"),
           "schedule plateau steps once per epoch on a validation metric; schedule.interval must be epoch")
    _check(sched.step_size >= 1, f"schedule.step_size must be >= 1, got {sched.step_size}")
    _check(sched.gamma > 0, f"schedule.gamma must be > 0, got {sched.gamma}")
    _check(all(m >= 0 for m in sched.milestones), f"schedule.milestones must be >= 0, got {sched.milestones}")
    _check(sched.T_max is None or sched.T_max >= 1, f"schedule.T_max must be >= 1, got {sched.T_max}")
    _check(sched.eta_min >= 0, f"schedule.eta_min must be >= 0, got {sched.eta_min}")
    _check(sched.warmup >= 0, f"schedule.warmup must be >= 0, got {sched.warmup}")
    _check(0.0 <= sched.start_factor <= 1.0, f"schedule.start_factor must be in [0, 1], got {sched.start_factor}")
    _check(sched.total_steps is None or sched.total_steps >= 1, f"schedule.total_steps must be >= 1, got {sched.total_steps}")
    _check(sched.max_lr is None or sched.max_lr > 0, f"schedule.max_lr must be > 0, got {sched.max_lr}")
    _check(0.0 <= sched.pct_start < 1.0,
           f"schedule.pct_start must be in [0, 1), got {sched.pct_start} (at 1 torch's OneCycleLR divides by zero after the last step)")
    _check(sched.div_factor > 0 and sched.final_div_factor > 0, "schedule.div_factor and final_div_factor must be > 0")
    _check(0.0 <= sched.base_momentum <= sched.max_momentum < 1.0,
           f"schedule momentum needs 0 <= base_momentum <= max_momentum < 1, got {sched.base_momentum}, {sched.max_momentum}")
    _check(0.0 < sched.factor < 1.0, f"schedule.factor must be in (0, 1), got {sched.factor}")
    _check(sched.patience >= 0 and sched.cooldown >= 0, "schedule.patience and schedule.cooldown must be >= 0")
    _check(sched.threshold >= 0 and sched.min_lr >= 0, "schedule.threshold and schedule.min_lr must be >= 0")
    if sched.name == "onecycle" and sched.cycle_momentum:
        _check(opt.name != "adagrad", "schedule.cycle_momentum needs an optimizer with momentum or beta1 "
               "(sgd, adam, adamw, rmsprop); adagrad has neither: set schedule.cycle_momentum: false")


def schedule_interval(sched: ScheduleConfig) -> str:
    if sched.interval is not None:
        return sched.interval
    return "step" if sched.name in STEP_INTERVAL_SCHEDULES else "epoch"


def plateau_mode(sched: ScheduleConfig) -> str:
    if sched.mode != "auto":
        return sched.mode
    return "min" if sched.monitor.endswith("loss") else "max"


def _reject_foreign_options(section: Any, defaults: Any, table: dict, chosen: str, what: str) -> None:
    for option, owners in table.items():
        if chosen not in owners and getattr(section, option) != getattr(defaults, option):
            raise ConfigError(
                f"{what}.{option} does not apply to {what} {chosen!r}; it applies to: {', '.join(owners)}"
            )


def resolved_weight_decay(opt: OptimizerConfig) -> float:
    if opt.weight_decay is not None:
        return opt.weight_decay
    return TORCH_DEFAULT_WEIGHT_DECAY.get(opt.name, 0.0)


def resolved_eps(opt: OptimizerConfig) -> float:
    if opt.eps is not None:
        return opt.eps
    return TORCH_DEFAULT_EPS.get(opt.name, 1e-8)


def monitor_mode(es: EarlyStoppingConfig) -> str:
    if es.mode != "auto":
        return es.mode
    return "min" if es.monitor.endswith("loss") else "max"
