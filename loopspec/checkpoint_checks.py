"""A checkpoint is input: every one is checked before any training state is built from it.

`check_state` holds state.json to its schema (every key, type and range, and the format) and its
counters to each other; `check_tensors` holds tensors.safetensors to itself (known prefixes, float
values that are finite, optimizer slots shaped as their parameters, integer counters); `check_fits`
holds both to the run about to continue: the model's names and shapes, the optimizer's slots, and a
position the config's batches can reach. Each failure is one line naming the checkpoint, the key or
tensor, and the problem (a CheckpointError), so --resume reports it instead of a traceback from
inside a framework, and a run directory's older valid checkpoint can be used instead.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from loopspec.config import Config, config_from_dict
from loopspec.errors import ConfigError, UserError
from loopspec.preprocessing import Preprocessing


class CheckpointError(UserError):
    pass


BACKENDS = ("torch", "jax")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
NONNEGATIVE_SLOTS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum")


def optimizer_slots(config: Config) -> tuple[str, ...]:
    """The torch slot names the configured optimizer keeps per parameter once it has stepped."""
    opt = config.optimizer
    cycled = config.schedule.name == "onecycle" and config.schedule.cycle_momentum
    if opt.name == "sgd":
        return ("momentum_buffer",) if opt.momentum or cycled else ()
    if opt.name in ("adam", "adamw"):
        return ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if opt.amsgrad else ()))
    if opt.name == "rmsprop":
        extra = (("grad_avg",) if opt.centered else ()) + (("momentum_buffer",) if opt.momentum or cycled else ())
        return ("square_avg", *extra)
    if opt.name == "adagrad":
        return ("sum",)
    return ()


# ----------------------------------------------------------------------------- state.json


class StateChecker:
    """Reads state.json values by dotted key, refusing a missing key, a wrong type or a bad range."""

    def __init__(self, state: Any, where: str):
        self.state, self.where = state, where

    def fail(self, key: str, problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.where}: state.json {key} {problem}")

    def get(self, key: str, optional: bool = False) -> Any:
        value: Any = self.state
        for part in key.split("."):
            if not isinstance(value, dict):
                raise self.fail(key, "is missing (its parent is not a mapping)")
            if part not in value:
                if optional:
                    return None
                raise self.fail(key, "is missing")
            value = value[part]
        return value

    def integer(self, key: str, minimum: int = 0, optional: bool = False, nullable: bool = False) -> Optional[int]:
        value = self.get(key, optional)
        if value is None and (optional or nullable):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def number(
        self, key: str, minimum: Optional[float] = None, finite: bool = True, nullable: bool = False
    ) -> Optional[float]:
        value = self.get(key)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if finite and not math.isfinite(value):
            raise self.fail(key, f"must be finite, got {value!r}")
        if minimum is not None and not value >= minimum:
            raise self.fail(key, f"must be at least {minimum:g}, got {value!r}")
        return float(value)

    def metric(self, key: str) -> float:
        """A best monitored value: every monitor (a loss, accuracy, precision, recall, F1) is >= 0;
        before the first epoch it is +inf or -inf."""
        value = self.number(key, finite=False)
        assert value is not None  # not nullable: number() raises rather than return None
        if not (value >= 0 or value == -math.inf):
            raise self.fail(key, f"must be a monitored value (>= 0, or -inf before the first epoch), got {value!r}")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return value


def check_state(state: Any, where: str, format_version: int) -> Config:
    """state.json against its schema; returns the checkpoint's config."""
    check = StateChecker(state, where)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {where}: state.json must hold a mapping, got {type(state).__name__}")
    version = check.get("format")
    if version != format_version:
        raise check.fail("format", f"is {version!r}; this version reads {format_version}")
    if check.get("backend") not in BACKENDS:
        raise check.fail("backend", f"must be one of {', '.join(BACKENDS)}, got {check.get('backend')!r}")
    try:
        config = config_from_dict(check.mapping("config"))
    except (ConfigError, TypeError, ValueError) as err:
        raise check.fail("config", f"is not a valid config: {err}") from None
    for key, minimum in (("epoch", 1), ("window", 0), ("step", 0), ("forward_passes", 0), ("records", 0)):
        check.integer(f"position.{key}", minimum)
    losses = check.get("loop.epoch_losses")
    if not isinstance(losses, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses):
        raise check.fail("loop.epoch_losses", "must be a list of numbers")
    for key in ("loop.epoch_skipped", "loop.skipped", "loop.early_stopping.wait", "loop.early_stopping.best_epoch"):
        check.integer(key)
    check.metric("loop.early_stopping.best")
    check.integer("loop.best_step", nullable=True)
    check_counters(check)
    check.number("hyperparameters.lr", minimum=0.0)
    momentum = check.number("hyperparameters.momentum", minimum=0.0, nullable=True)
    if momentum is not None and momentum >= 1:
        raise check.fail("hyperparameters.momentum", f"must be below 1, got {momentum!r}")
    if check.get("preprocessing", optional=True) is not None:
        try:
            Preprocessing.from_dict(check.mapping("preprocessing"), f"checkpoint {where}: state.json preprocessing")
        except UserError as err:
            raise CheckpointError(str(err)) from None
    if config.schedule.name == "plateau":
        check.metric("plateau.best")
        check.integer("plateau.num_bad_epochs")
        check.integer("plateau.cooldown_counter")
    if config.train.precision == "fp16":
        check.number("loss_scale.scale", minimum=0.0)
        if not check.get("loss_scale.scale") > 0:
            raise check.fail("loss_scale.scale", "must be positive")
        check.integer("loss_scale.growth_tracker")
    return config


def check_counters(check: StateChecker) -> None:
    """The run's counters against each other: what one run could have written."""
    step, skipped = check.get("position.step"), check.get("loop.skipped")
    if check.get("loop.epoch_skipped") > skipped:
        raise check.fail("loop.epoch_skipped", f"({check.get('loop.epoch_skipped')}) exceeds loop.skipped ({skipped})")
    if check.get("position.forward_passes") < step:
        raise check.fail(
            "position.forward_passes", f"({check.get('position.forward_passes')}) is below the step ({step})"
        )
    best_step = check.get("loop.best_step")
    if best_step is not None and best_step > step:
        raise check.fail("loop.best_step", f"({best_step}) is after the checkpoint's step ({step})")
    if check.get("loop.early_stopping.best_epoch") >= check.get("position.epoch") + 1:
        raise check.fail("loop.early_stopping.best_epoch", "is after the checkpoint's epoch")


# ----------------------------------------------------------------------------- tensors.safetensors


def check_tensors(tensors: dict[str, np.ndarray], where: str) -> None:
    """Known prefixes; model and optimizer values finite floats (counters integers); each optimizer
    slot shaped as its parameter; random states as the frameworks keep them."""
    model = {name[6:]: value for name, value in tensors.items() if name.startswith("model.")}
    for name, value in tensors.items():
        prefix = name.split(".", 1)[0]
        if prefix not in ("model", "optimizer", "rng") or "." not in name:
            raise CheckpointError(f"checkpoint {where}: tensor {name} is not model.*, optimizer.* or rng.*")
        if prefix == "rng":
            check_rng(name, value, where)
            continue
        counter = name.endswith("num_batches_tracked")
        if counter != np.issubdtype(value.dtype, np.integer):
            kind = "an integer count" if counter else "floating-point values"
            raise CheckpointError(f"checkpoint {where}: tensor {name} holds {value.dtype}; it must hold {kind}")
        if counter:
            if value.shape != () or value < 0:
                raise CheckpointError(f"checkpoint {where}: tensor {name} must be one non-negative count")
            continue
        if not np.isfinite(value).all():
            raise CheckpointError(
                f"checkpoint {where}: tensor {name} holds {int((~np.isfinite(value)).sum())} NaN/inf values"
            )
        if name.endswith(("running_var", *NONNEGATIVE_SLOTS)) and value.min(initial=0) < 0:
            raise CheckpointError(f"checkpoint {where}: tensor {name} holds negative values (min {value.min():.3g})")
        if prefix == "optimizer":
            parameter, _, slot = name[len("optimizer.") :].rpartition(".")
            if parameter not in model:
                raise CheckpointError(f"checkpoint {where}: tensor {name} is a slot of no model.* parameter")
            if value.shape != model[parameter].shape:
                raise CheckpointError(
                    f"checkpoint {where}: tensor {name} has shape {tuple(value.shape)}, its parameter "
                    f"{tuple(model[parameter].shape)}"
                )


def check_rng(name: str, value: np.ndarray, where: str) -> None:
    expected = {"rng.torch": np.uint8, "rng.jax": np.uint32}
    if name not in expected:
        raise CheckpointError(f"checkpoint {where}: tensor {name} is no random state this version reads")
    if value.dtype != expected[name] or value.ndim != 1 or value.size == 0:
        raise CheckpointError(
            f"checkpoint {where}: tensor {name} must be a 1-D {np.dtype(expected[name]).name} array, "
            f"got {value.dtype} {tuple(value.shape)}"
        )


# ----------------------------------------------------------------------------- the run it continues


def check_fits(
    checkpoint: Any,
    config: Config,
    shapes: dict[str, tuple[int, ...]],
    parameters: Sequence[str],
    updates_per_epoch: Optional[int] = None,
    batches_per_epoch: Optional[int] = None,
) -> None:
    """The checkpoint against the run about to continue: the model's tensors by name and shape, the
    optimizer's slots for every parameter once it has stepped, a position the batches can reach
    (when the data's batches per epoch are known)."""
    where, tensors, state = checkpoint.path, checkpoint.tensors, checkpoint.state
    model = {name[6:]: value for name, value in tensors.items() if name.startswith("model.")}
    missing = [name for name in shapes if name not in model]
    unexpected = [name for name in model if name not in shapes]
    if missing or unexpected:
        parts = ([f"lacks model.{missing[0]}"] if missing else []) + (
            [f"has model.{unexpected[0]}, which the model does not"] if unexpected else []
        )
        count = len(missing) + len(unexpected)
        counted = f" ({count} tensors)" if count > 1 else ""
        raise CheckpointError(f"checkpoint {where} does not fit this model: {'; '.join(parts)}{counted}")
    for name, shape in shapes.items():
        if tuple(model[name].shape) != tuple(shape):
            raise CheckpointError(
                f"checkpoint {where}: tensor model.{name} has shape {tuple(model[name].shape)}, the model needs "
                f"{tuple(shape)}"
            )
    check_slots(where, tensors, config, parameters, state["position"]["step"])
    if updates_per_epoch is not None and batches_per_epoch is not None:
        check_position(where, state, updates_per_epoch, batches_per_epoch, config)


def check_slots(
    where: Any, tensors: dict[str, np.ndarray], config: Config, parameters: Sequence[str], step: int
) -> None:
    slots = optimizer_slots(config)
    present = {name[len("optimizer.") :] for name in tensors if name.startswith("optimizer.")}
    unknown = sorted(name for name in present if name.rpartition(".")[2] not in slots)
    if unknown:
        raise CheckpointError(
            f"checkpoint {where}: tensor optimizer.{unknown[0]} is no slot of {config.optimizer.name} as configured "
            f"(slots: {', '.join(slots) or 'none'})"
        )
    if step == 0 and not present:
        return
    needed = [f"{parameter}.{slot}" for parameter in parameters for slot in slots]
    absent = [name for name in needed if name not in present]
    if absent and not (config.optimizer.name == "adagrad" and step == 0):
        raise CheckpointError(
            f"checkpoint {where}: tensor optimizer.{absent[0]} is missing ({len(absent)} optimizer slots missing "
            f"after {step} updates)"
        )


def check_position(
    where: Any, state: dict[str, Any], updates_per_epoch: int, batches_per_epoch: int, config: Config
) -> None:
    """Applied plus skipped updates cannot exceed the windows before the position, nor forward passes
    those windows' micro-batches (fewer when train.max_steps ended an epoch early)."""
    position, loop = state["position"], state["loop"]
    epoch, window = position["epoch"], position["window"]
    if window > updates_per_epoch:
        raise CheckpointError(
            f"checkpoint {where}: state.json position.window ({window}) exceeds the {updates_per_epoch} updates of "
            "an epoch of this config"
        )
    windows = (epoch - 1) * updates_per_epoch + window
    if position["step"] + loop["skipped"] > windows:
        raise CheckpointError(
            f"checkpoint {where}: state.json position.step ({position['step']}) plus loop.skipped "
            f"({loop['skipped']}) exceeds the {windows} updates before epoch {epoch}, window {window}"
        )
    passes = (epoch - 1) * batches_per_epoch + min(window * config.train.accumulation_steps, batches_per_epoch)
    if position["forward_passes"] > passes:
        raise CheckpointError(
            f"checkpoint {where}: state.json position.forward_passes is {position['forward_passes']}; epoch {epoch}, "
            f"window {window} of this config is at most {passes} forward passes in"
        )
