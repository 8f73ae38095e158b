"""Validation of the config: what every field declares, and the rules between fields.

Field checks come from the schema (type, `Literal` choices, ranges, list lengths, finiteness,
the choices an option applies to). The rules between fields are listed in RULES, each with a
config that breaks it, so the tests can build every rule's failure through each construction
path. Every failure is a ConfigError of one line naming the key, the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from loopspec.errors import ConfigError

FILE_DATASETS = ("idx", "cifar10", "csv", "npz")
PATH_DATASETS = (*FILE_DATASETS, "arrays", "text")  # arrays: an .npz of fit's arrays; text: a UTF-8 file
GENERATED_DATASETS = ("intrusion", "synthetic_images")
STEP_INTERVAL_SCHEDULES = ("warmup_cosine", "onecycle")  # the rest step per epoch by default

SECTION_WORDS = {"data": "dataset", "model": "model", "loss": "loss", "optimizer": "optimizer", "schedule": "schedule"}
TORCH_DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2}
TORCH_DEFAULT_EPS = {"adagrad": 1e-10}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(field_types(cls)[f.name])]


def default_of(f: dataclasses.Field) -> Any:
    # a field without a default has a default_factory (the schema gives every field one or the other)
    return typing.cast(Callable[[], Any], f.default_factory)() if f.default is dataclasses.MISSING else f.default


# ----------------------------------------------------------------------------- field checks


def coerce(value: Any, hint: Any, key: str) -> Any:
    """The value in the field's type, or a ConfigError naming the key and the expected type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        alternatives = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(alternatives) == 1:
            return coerce(value, alternatives[0], key)
        for alternative in alternatives:  # int | Literal["auto"]: the first that takes the value
            try:
                return coerce(value, alternative, key)
            except ConfigError:
                continue
        words = " or ".join(describe_type(arg) for arg in alternatives)
        raise ConfigError(f"{key} must be {words}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if not isinstance(value, str) or value not in choices:
            section, _, leaf = key.rpartition(".")
            what = f"{SECTION_WORDS[section]} ({key})" if leaf == "name" and section in SECTION_WORDS else key
            raise ConfigError(f"unknown {what} {value!r}; allowed: {', '.join(choices)}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping with string keys, got {value!r}")
        _, item = typing.get_args(hint)
        return {k: v if item is Any else coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            if typing.get_origin(item) is typing.Literal:
                choices = typing.get_args(item)
                raise ConfigError(
                    f"{key} must be a list of values from {', '.join(choices)} "
                    f"(e.g. [{choices[0]}, {choices[-1]}]), got {value!r}"
                )
            raise ConfigError(f"{key} must be a list of {item.__name__}, got {value!r}")
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
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
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")  # a schema bug, not a user error


def describe_type(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(choice) for choice in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def describe_range(checks: dict[str, Any]) -> Optional[str]:
    def number(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"

    low = ("(", checks["gt"]) if "gt" in checks else ("[", checks["ge"]) if "ge" in checks else None
    high = (")", checks["lt"]) if "lt" in checks else ("]", checks["le"]) if "le" in checks else None
    if low and high:
        return f"in {low[0]}{number(low[1])}, {number(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {number(low[1])}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {number(high[1])}"
    return None


def in_range(value: float, checks: dict[str, Any]) -> bool:
    return (
        value > checks.get("gt", -math.inf)
        and value >= checks.get("ge", -math.inf)
        and value < checks.get("lt", math.inf)
        and value <= checks.get("le", math.inf)
    )


def check_value(value: Any, checks: dict[str, Any], key: str) -> None:
    """Ranges (of a number or of each element of a list) and list lengths."""
    if value is None or isinstance(value, str) or not checks:  # a Literal alternative such as "auto"
        return
    described = describe_range(checks)
    if isinstance(value, list):
        length, least = checks.get("length"), checks.get("min_length", 0)
        size = f"{length}" if length else f"at least {least}" if least else "any number of"
        if (length and len(value) != length) or len(value) < least or not all(in_range(v, checks) for v in value):
            elements = f"values {described}" if described else "values"
            raise ConfigError(f"{key} must list {size} {elements}, got {value}")
        return
    if described and not in_range(value, checks):
        raise ConfigError(f"{key} must be {described}, got {value!r}")


def coerced_fields(cls: type, raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The raw values of a section's (or the top level's) own fields in their declared types (1 -> 1.0,
    a tuple -> a list): computed before the frozen instance is built, which then only validates."""
    hints = field_types(cls)
    names = {f.name for f in fields(cls)}
    return {
        name: coerce(value, hints[name], f"{prefix}{name}") if name in names else value for name, value in raw.items()
    }


def check_section(section: Any) -> None:
    """Types, choices, ranges and applicability of one section's fields; then its own rules."""
    cls: type = type(section)  # `type`: mypy finds type[Any] not Hashable (the cache)
    prefix = type(section).key
    hints = field_types(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}"
        value = coerce(getattr(section, f.name), hints[f.name], key)  # checks the type; the instance keeps its own
        check_value(value, f.metadata.get("checks", {}), key)
        applies = f.metadata.get("applies", ())
        if applies and section.name not in applies and value != default_of(f):
            word = SECTION_WORDS[prefix]
            raise ConfigError(f"{key} does not apply to {word} {section.name!r}; it applies to: {', '.join(applies)}")
    for rule in RULES:
        if rule.section == prefix:
            message = rule.check(section)
            if message:
                raise ConfigError(message)


def check_config(config: Any) -> None:
    """The top-level fields and the rules between sections."""
    cls: type = type(config)
    for f in fields(cls):
        value = coerce(getattr(config, f.name), field_types(cls)[f.name], f.name)
        check_value(value, f.metadata.get("checks", {}), f.name)
    for f in dataclasses.fields(cls):
        expected = field_types(cls)[f.name]
        if (
            isinstance(expected, type)
            and dataclasses.is_dataclass(expected)
            and not isinstance(getattr(config, f.name), expected)
        ):
            raise ConfigError(f"{f.name} must be a {expected.__name__}, got {type(getattr(config, f.name)).__name__}")
    for rule in RULES:
        if rule.section == "":
            message = rule.check(config)
            if message:
                raise ConfigError(message)


# ----------------------------------------------------------------------------- rules between fields


@dataclass(frozen=True)
class Rule:
    section: str  # the section key it reads ("" for rules across sections)
    check: Callable[[Any], Optional[str]]  # the error message, or None when the rule holds
    example: dict[str, Any]  # a raw config that breaks it


def when(condition: bool, message: str) -> Optional[str]:
    return message if condition else None


RULES: list[Rule] = [
    Rule(
        "data",
        lambda d: when(d.name in FILE_DATASETS and d.path is None, f"data.path is required for dataset {d.name!r}"),
        {"data": {"name": "csv"}},
    ),
    Rule(
        "model",
        lambda m: when(
            m.name == "gpt" and m.n_embd % m.n_head != 0,
            f"model.n_embd ({m.n_embd}) must divide by model.n_head ({m.n_head}): each head takes an equal share",
        ),
        {"model": {"name": "gpt", "n_embd": 30, "n_head": 4}},
    ),
    Rule(
        "loss",
        lambda loss: when(
            loss.class_weights is not None and sum(loss.class_weights) <= 0,
            f"loss.class_weights needs a positive weight (torch divides by the targets' summed "
            f"weight), got {loss.class_weights}",
        ),
        {"loss": {"class_weights": [0.0, 0.0]}},
    ),
    Rule(
        "optimizer",
        lambda o: when(
            o.nesterov and (o.momentum <= 0 or o.dampening != 0),
            "optimizer.nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD)",
        ),
        {"optimizer": {"name": "sgd", "nesterov": True}},
    ),
    Rule(
        "schedule",
        lambda s: when(
            s.name == "none" and s.interval is not None, "schedule.interval needs a schedule (schedule.name)"
        ),
        {"schedule": {"interval": "step"}},
    ),
    Rule(
        "schedule",
        lambda s: when(
            s.name == "plateau" and s.interval == "step",
            "schedule plateau steps once per epoch on a validation metric; schedule.interval must be epoch",
        ),
        {"schedule": {"name": "plateau", "interval": "step"}},
    ),
    Rule(
        "schedule",
        lambda s: when(
            s.base_momentum > s.max_momentum,
            f"schedule momentum needs base_momentum <= max_momentum, got {s.base_momentum}, {s.max_momentum}",
        ),
        {"schedule": {"name": "onecycle", "base_momentum": 0.9, "max_momentum": 0.8}},
    ),
    Rule(
        "train",
        lambda t: when(
            t.clip_grad_norm is not None and t.clip_grad_value is not None,
            "set one of train.clip_grad_norm and train.clip_grad_value, not both",
        ),
        {"train": {"clip_grad_norm": 1.0, "clip_grad_value": 0.1}},
    ),
    Rule(
        "train",
        lambda t: when(
            t.precision == "fp16" and t.accumulation == "multisteps" and t.accumulation_steps > 1,
            "fp16 with accumulation needs train.accumulation: manual; optax.MultiSteps cannot skip "
            "an overflowing window (its accumulator reset multiplies by zero, and 0 * inf is NaN)",
        ),
        {"train": {"precision": "fp16", "accumulation_steps": 2, "accumulation": "multisteps"}},
    ),
    Rule(
        "",
        lambda c: when(
            c.schedule.name == "onecycle" and c.schedule.cycle_momentum and c.optimizer.name == "adagrad",
            "schedule.cycle_momentum needs an optimizer with momentum or beta1 (sgd, adam, adamw, "
            "rmsprop); adagrad has neither: set schedule.cycle_momentum: false",
        ),
        {"optimizer": {"name": "adagrad"}, "schedule": {"name": "onecycle"}},
    ),
]


# ----------------------------------------------------------------------------- derived values


def schedule_interval(sched: Any) -> str:
    if sched.interval is not None:
        return sched.interval
    return "step" if sched.name in STEP_INTERVAL_SCHEDULES else "epoch"


def monitor_mode(mode: Literal["auto", "min", "max"], monitor: str) -> Literal["min", "max"]:
    """min or max for a monitored metric: `auto` is min for losses, max for the rest."""
    if mode != "auto":
        return mode
    return "min" if monitor.endswith("loss") else "max"


def resolved_weight_decay(opt: Any) -> float:
    return opt.weight_decay if opt.weight_decay is not None else TORCH_DEFAULT_WEIGHT_DECAY.get(opt.name, 0.0)


def resolved_eps(opt: Any) -> float:
    return opt.eps if opt.eps is not None else TORCH_DEFAULT_EPS.get(opt.name, 1e-8)
