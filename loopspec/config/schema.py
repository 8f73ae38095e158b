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
from typing import Any, Literal, Optional, Union, get_args

from loopspec.config.rules import (
    GENERATED_DATASETS,
    PATH_DATASETS,
    check_config,
    check_section,
)

Dataset = Literal["intrusion", "synthetic_images", "digits", "idx", "cifar10", "csv", "npz", "arrays", "text"]
Model = Literal["mlp", "fashion_mlp", "cnn", "gpt", "custom"]
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
    doc: str = "",
    **checks: Any,
) -> Any:
    """A config field. `applies`: the values of the section's `name` it belongs to (empty: all).
    `doc`: what it means (docs/config.md is generated from it: python -m loopspec.config.reference).
    `checks`: gt, ge, lt, le (numbers, or each element of a list), length, min_length (lists)."""
    return field(default=default, default_factory=factory, metadata={"applies": applies, "checks": checks, "doc": doc})


class Section:
    """Validates a section's own fields on construction (types, choices, ranges, applicability)."""

    key = ""  # the section's dotted key in Config

    def __post_init__(self) -> None:
        check_section(self)


@dataclass(frozen=True)
class DataConfig(Section):
    """The dataset, its split and its batches."""

    key = "data"
    name: Dataset = option(
        "intrusion",
        doc="`intrusion` (generated, NSL-KDD-shaped), `synthetic_images` (generated), `digits` (scikit-learn's "
        "8x8, shipped), a file: `idx`, `cifar10`, `csv`, `npz`, `arrays` (passed to fit(data=...), or an .npz "
        "read as it is), or `text` (characters of a UTF-8 file, or of a short text shipped with the package)",
    )
    path: Optional[str] = option(
        None,
        applies=PATH_DATASETS,
        doc="file datasets: `idx` a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
        "(or the images file); `cifar10` the cifar-10-batches-py folder; `csv` a file with a header row; `npz` "
        "a file with x_train, y_train, x_val, y_val (`arrays`: the same, samples of any shape kept as they are). A "
        "relative path is read from the current directory",
    )
    label_column: str = option(
        "label", applies=("csv",), doc="the column of integer class ids; every other column is a feature"
    )
    num_samples: int = option(12000, applies=GENERATED_DATASETS, ge=10, doc="how many samples to generate")
    image_size: int = option(16, applies=("synthetic_images",), ge=8, doc="height and width")
    channels: int = option(3, applies=("synthetic_images",), ge=1, doc="image channels")
    num_classes: int = option(10, applies=("synthetic_images",), ge=2, doc="classes")
    val_fraction: float = option(
        0.2,
        applies=tuple(d for d in get_args(Dataset) if d not in ("npz", "arrays")),
        gt=0.0,
        lt=1.0,
        doc="the seeded validation split (npz brings its own)",
    )
    seed: int = option(0, ge=0, doc="data generation and the split, apart from the top-level seed")
    batch_size: int = option(128, ge=1, doc="training batch size")
    eval_batch_size: int = option(1024, ge=1, doc="validation batch size")
    shuffle: bool = option(True, doc="reshuffle every epoch (the order is a function of seed and epoch)")
    drop_last: bool = option(False, doc="drop the short last training batch")
    block_size: int = option(
        64, applies=("text",), ge=2, doc="tokens per sample; the label of each is the next character"
    )
    stride: Optional[int] = option(
        None, applies=("text",), ge=1, doc="characters between the starts of two samples; null: block_size"
    )


CUSTOM = ("custom",)


@dataclass(frozen=True)
class ModelConfig(Section):
    """The network. Both backends build it; its tensors carry torch's state_dict names."""

    key = "model"
    name: Model = option(
        "mlp",
        doc="`mlp` (Linear-BatchNorm1d-ReLU-Dropout blocks), `fashion_mlp` (Flatten, 784-512-512-10), `cnn` "
        "(three Conv3x3-BatchNorm2d-ReLU-MaxPool2 blocks and a linear head; NCHW input), `gpt` (a GPT-style "
        "Transformer over token ids, docs/gpt.md), or `custom`: your own pair, from `torch` and `flax` "
        "(docs/models.md)",
    )
    torch: Optional[str] = option(
        None, applies=CUSTOM, doc="`pkg.module:factory` returning the torch.nn.Module (called with `kwargs`)"
    )
    flax: Optional[str] = option(
        None,
        applies=CUSTOM,
        doc="`pkg.module:factory` returning the flax.linen or flax.nnx Module (called with `kwargs`)",
    )
    kwargs: dict[str, Any] = option(factory=dict, applies=CUSTOM, doc="keyword arguments for both factories")
    name_map: dict[str, str] = option(
        factory=dict,
        applies=CUSTOM,
        doc="flax parameter path (`blocks_0/attn/kernel`) -> torch state_dict name, where the naming convention "
        "cannot tell (docs/models.md)",
    )
    hidden: list[int] = option(factory=lambda: [256, 128], applies=("mlp",), min_length=1, ge=1, doc="block widths")
    channels: list[int] = option(factory=lambda: [32, 64, 128], applies=("cnn",), length=3, ge=1, doc="block widths")
    dropout: float = option(0.3, applies=("mlp", "gpt"), ge=0.0, lt=1.0, doc="dropout rate")
    n_layer: int = option(2, applies=("gpt",), ge=1, doc="Transformer blocks")
    n_head: int = option(2, applies=("gpt",), ge=1, doc="attention heads (n_embd must divide by it)")
    n_embd: int = option(64, applies=("gpt",), ge=1, doc="the embedding width")
    tie_weights: bool = option(True, applies=("gpt",), doc="the head is the token embedding (one tensor, two uses)")
    bias: bool = option(True, applies=("gpt",), doc="biases in the Linear layers and LayerNorms")
    dropout_mode: Literal["framework", "parity"] = option(
        "framework",
        applies=("mlp", "gpt", "custom"),
        doc="`framework`: each framework's own RNG; `parity`: both draw the same masks from one counter-based "
        "generator keyed by seed, layer and forward pass, so runs with dropout match",
    )
    # A Linear/Conv bias feeding BatchNorm is cancelled by its mean subtraction: its true
    # gradient is zero and only rounding noise moves it (docs/parity.md). Off, as in torchvision.
    bias_before_norm: bool = option(
        False,
        applies=("mlp", "cnn"),
        doc="give the Linear/Conv layers that feed BatchNorm a bias (its true gradient is zero: docs/parity.md)",
    )
    batchnorm_momentum: float = option(
        0.1, applies=("mlp", "cnn"), gt=0.0, le=1.0, doc="torch's convention: the weight of the new statistic"
    )
    batchnorm_eps: float = option(1e-5, applies=("mlp", "cnn"), gt=0.0, doc="torch's default on both backends")
    init: Literal["canonical", "framework"] = option(
        "canonical",
        doc="`canonical`: the model's init drawn in NumPy from seed, identical on both backends (built-in models: "
        "torch's defaults; gpt: nanoGPT's N(0, 0.02)); `framework`: each framework initialises itself (a "
        "custom pair: torch's module's own init, and JAX starts from --init weights)",
    )


@dataclass(frozen=True)
class LossConfig(Section):
    """The loss, with torch's reductions (means; weighted cross-entropy divides by the targets' weight)."""

    key = "loss"
    name: Loss = option(
        "cross_entropy",
        doc="`cross_entropy`, `bce` (with logits), `focal` (one logit: the sigmoid form; more: the softmax form), "
        "`mse`, `l1` (the logits against one-hot targets)",
    )
    label_smoothing: float = option(0.0, applies=("cross_entropy",), ge=0.0, le=1.0, doc="torch's label smoothing")
    class_weights: Optional[list[float]] = option(
        None, applies=("cross_entropy", "focal"), min_length=2, ge=0.0, doc="one weight per class"
    )
    pos_weight: Optional[float] = option(None, applies=("bce",), gt=0.0, doc="the weight of positive examples")
    alpha: Optional[float] = option(
        0.25,
        applies=("focal",),
        ge=0.0,
        le=1.0,
        doc="binary focal: class 1 weighted by alpha, class 0 by 1-alpha; null: no weighting",
    )
    gamma: float = option(2.0, applies=("focal",), ge=0.0, doc="the focusing exponent")


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """torch.optim's optimizers under torch's names; null options take torch's default."""

    key = "optimizer"
    name: Optimizer = option("adamw", doc="`sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`")
    lr: float = option(1e-3, gt=0.0, doc="the learning rate (a schedule's base)")
    weight_decay: Optional[float] = option(
        None, ge=0.0, doc="null: torch's (adamw 1e-2, the others 0); L2 on the gradient, decoupled for adamw"
    )
    decay: Literal["all", "matrices"] = option(
        "all",
        doc="`matrices`: weight decay only on tensors of 2 or more dimensions, as nanoGPT (two torch param "
        "groups; an optax mask), not on biases and norms",
    )
    momentum: float = option(0.0, applies=("sgd", "rmsprop"), ge=0.0, doc="momentum")
    dampening: float = option(0.0, applies=("sgd",), ge=0.0, le=1.0, doc="SGD's dampening")
    nesterov: bool = option(False, applies=("sgd",), doc="Nesterov momentum")
    betas: list[float] = option(
        factory=lambda: [0.9, 0.999], applies=("adam", "adamw"), length=2, ge=0.0, lt=1.0, doc="Adam's betas"
    )
    eps: Optional[float] = option(
        None, applies=("adam", "adamw", "rmsprop", "adagrad"), ge=0.0, doc="null: torch's (1e-8; adagrad 1e-10)"
    )
    amsgrad: bool = option(False, applies=("adam", "adamw"), doc="AMSGrad (torch's: the max before bias correction)")
    alpha: float = option(0.99, applies=("rmsprop",), ge=0.0, le=1.0, doc="RMSprop's smoothing constant")
    centered: bool = option(False, applies=("rmsprop",), doc="centered RMSprop")
    lr_decay: float = option(0.0, applies=("adagrad",), ge=0.0, doc="Adagrad's learning-rate decay")
    initial_accumulator_value: float = option(0.0, applies=("adagrad",), ge=0.0, doc="Adagrad's starting sum")


ONECYCLE = ("onecycle",)
PLATEAU = ("plateau",)


@dataclass(frozen=True)
class ScheduleConfig(Section):
    """torch.optim.lr_scheduler's schedules under torch's names and defaults; one step is one applied update."""

    key = "schedule"
    name: Schedule = option(
        "none",
        doc="`none`, `step` (StepLR), `multistep` (MultiStepLR), `exponential` (ExponentialLR), `cosine` "
        "(CosineAnnealingLR), `warmup_cosine` (linear warm-up, then cosine), `onecycle` (OneCycleLR), `plateau` "
        "(ReduceLROnPlateau)",
    )
    interval: Optional[Literal["step", "epoch"]] = option(
        None,
        doc="advance after every optimizer update or every validation; null: per step for warmup_cosine and "
        "onecycle, else per epoch (plateau is per epoch)",
    )
    step_size: int = option(10, applies=("step",), ge=1, doc="intervals between decays")
    gamma: float = option(0.1, applies=("step", "multistep", "exponential"), gt=0.0, doc="the decay factor")
    milestones: list[int] = option(
        factory=list, applies=("multistep",), ge=0, doc="when to decay (a repeated milestone decays twice, as torch)"
    )
    T_max: Optional[int] = option(
        None, applies=("cosine",), ge=1, doc="null: the run's length; past T_max the rate rises again, as torch's"
    )
    eta_min: float = option(0.0, applies=("cosine", "warmup_cosine"), ge=0.0, doc="the floor")
    warmup: int = option(0, applies=("warmup_cosine",), ge=0, doc="warm-up length in intervals")
    start_factor: float = option(
        0.0, applies=("warmup_cosine",), ge=0.0, le=1.0, doc="the warm-up starts at lr * start_factor"
    )
    total_steps: Optional[int] = option(
        None, applies=("onecycle", "warmup_cosine"), ge=1, doc="the schedule's length; null: the run's"
    )
    max_lr: Optional[float] = option(None, applies=ONECYCLE, gt=0.0, doc="null: optimizer.lr")
    pct_start: float = option(0.3, applies=ONECYCLE, ge=0.0, lt=1.0, doc="the share of the rising phase")
    anneal_strategy: Literal["cos", "linear"] = option("cos", applies=ONECYCLE, doc="`cos` or `linear`")
    div_factor: float = option(25.0, applies=ONECYCLE, gt=0.0, doc="initial lr = max_lr / div_factor")
    final_div_factor: float = option(1e4, applies=ONECYCLE, gt=0.0, doc="min lr = initial lr / final_div_factor")
    three_phase: bool = option(False, applies=ONECYCLE, doc="torch's three-phase OneCycle")
    cycle_momentum: bool = option(
        True, applies=ONECYCLE, doc="cycle SGD/RMSprop momentum or Adam/AdamW beta1 (Adagrad has neither)"
    )
    base_momentum: float = option(0.85, applies=ONECYCLE, ge=0.0, lt=1.0, doc="the momentum at max_lr")
    max_momentum: float = option(0.95, applies=ONECYCLE, ge=0.0, lt=1.0, doc="the momentum at the ends")
    monitor: Monitor = option("val_loss", applies=PLATEAU, doc="the metric, as in early stopping")
    mode: Mode = option("auto", applies=PLATEAU, doc="`min`, `max`, or `auto` (min for losses)")
    factor: float = option(0.1, applies=PLATEAU, gt=0.0, lt=1.0, doc="the cut")
    patience: int = option(10, applies=PLATEAU, ge=0, doc="epochs without improvement before a cut")
    threshold: float = option(1e-4, applies=PLATEAU, ge=0.0, doc="what counts as an improvement")
    threshold_mode: Literal["rel", "abs"] = option("rel", applies=PLATEAU, doc="`rel` or `abs`, as torch")
    cooldown: int = option(0, applies=PLATEAU, ge=0, doc="epochs after a cut before counting again")
    min_lr: float = option(0.0, applies=PLATEAU, ge=0.0, doc="the lowest rate")


@dataclass(frozen=True)
class EarlyStoppingConfig(Section):
    """Keras's early stopping."""

    key = "train.early_stopping"
    enabled: bool = option(False, doc="stop when the monitor stops improving")
    monitor: Monitor = option(
        "val_loss", doc="`val_loss`, `val_acc`, `val_precision`, `val_recall`, `val_f1`, `train_loss`"
    )
    mode: Mode = option("auto", doc="`min`, `max`, or `auto` (min for losses, max for the rest)")
    patience: int = option(5, ge=1, doc="epochs without improvement before stopping")
    min_delta: float = option(0.0, ge=0.0, doc="the least change that counts")
    restore_best_weights: bool = option(True, doc="final.safetensors holds the best epoch's weights")


@dataclass(frozen=True)
class LossScaleConfig(Section):
    """Dynamic loss scaling for fp16: torch.amp.GradScaler's options and defaults."""

    key = "train.loss_scale"
    init_scale: float = option(65536.0, gt=0.0, doc="the first scale")
    growth_factor: float = option(2.0, gt=1.0, doc="the growth after growth_interval finite steps")
    backoff_factor: float = option(0.5, gt=0.0, lt=1.0, doc="the cut on an overflow")
    growth_interval: int = option(2000, ge=1, doc="finite steps before a growth")


@dataclass(frozen=True)
class CheckpointConfig(Section):
    """When the complete training state is saved to out/checkpoints/ (docs/checkpoints.md)."""

    key = "train.checkpoint"
    every_steps: Optional[int] = option(None, ge=1, doc="also every N applied updates")
    every_epoch: bool = option(True, doc="after every validation")
    keep_last: int = option(2, ge=1, doc="the newest N are kept, and the best by the early-stopping monitor")


@dataclass(frozen=True)
class TrainConfig(Section):
    """How the run trains."""

    key = "train"
    epochs: int = option(10, ge=1, doc="epochs")
    max_steps: Optional[int] = option(None, ge=1, doc="stop after this many optimizer updates")
    precision: Precision = option(
        "fp32", doc="`fp32`, `bf16`, `fp16`, `fp64`; bf16 and fp16 are mixed: float32 weights, low-precision compute"
    )
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)
    tf32: bool = option(False, doc="fp32 matmuls on a GPU: false keeps full float32 (strict parity), true allows TF32")
    device: Literal["cpu", "cuda", "auto"] = option("cpu", doc="`cpu`, `cuda`, or `auto`")
    devices: Union[int, Literal["auto"]] = option(
        1, ge=1, doc="data-parallel replicas (torchrun ranks, JAX devices), or `auto` (docs/data-parallel.md)"
    )
    verbose: Optional[int] = option(
        None, ge=0, le=2, doc="0 silent, 1 bars (terminal), 2 epoch lines; null: 1 on a terminal, else 2"
    )
    log_every: int = option(50, ge=0, doc="off the bar: a step line every N steps (0: never)")
    loggers: list[Logger] = option(factory=lambda: ["jsonl"], doc="metrics.jsonl always; also `tensorboard`, `csv`")
    accumulation_steps: int = option(1, ge=1, doc="micro-batches per optimizer update (their gradients are averaged)")
    accumulation: Literal["manual", "multisteps"] = option(
        "manual", doc="JAX: one jitted step scans the window (`manual`), or optax.MultiSteps"
    )
    clip_grad_norm: Optional[float] = option(None, gt=0.0, doc="torch's clip_grad_norm_")
    clip_grad_value: Optional[float] = option(None, gt=0.0, doc="clamp every gradient element to [-v, v]")
    on_nonfinite: Literal["stop", "skip"] = option(
        "stop", doc="a NaN/inf loss or gradient: stop (saving the weights) or skip the update"
    )
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass(frozen=True)
class Config:
    seed: int = option(0, ge=0, le=2**32 - 1, doc="weight init, dropout and batch order (JAX keys take 32 bits)")
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
