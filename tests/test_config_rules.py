"""Every validation rule, through every way of building a config: the same one-line error.

The rules are enumerated, not sampled: every field's declared checks (type, choices, range,
list length, finiteness, the choices it applies to) and every rule between fields in
loopspec.config.RULES. Each bad value goes through four construction paths: dataclasses built
in Python, a dict, `--set` overrides and a YAML file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from loopspec.config import RULES, Config, ConfigError, config_from_dict, load_config
from loopspec.config.rules import default_of, field_types, fields, in_range
from loopspec.config.schema import TrainConfig

SECTIONS = {f.name: field_types(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "seed"}
NESTED = {
    f.name: field_types(TrainConfig)[f.name]
    for f in dataclasses.fields(TrainConfig)
    if dataclasses.is_dataclass(field_types(TrainConfig)[f.name])
}


def from_python(raw: dict[str, Any]) -> Config:
    """The constructors, as a Python user calls them."""
    sections = {}
    for name, values in raw.items():
        if name == "seed":
            continue
        values = dict(values)
        if name == "train":
            values.update({key: NESTED[key](**values[key]) for key in NESTED if key in values})
        sections[name] = SECTIONS[name](**values)
    return Config(**({"seed": raw["seed"]} if "seed" in raw else {}), **sections)


def yaml_text(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value)  # JSON is YAML


def flatten(raw: dict[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in raw.items():
        if isinstance(value, dict):
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={yaml_text(value)}")
    return items


def from_file(raw: dict[str, Any], directory: Path) -> Config:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


PATHS: dict[str, Callable[[dict, Path], Config]] = {
    "python": lambda raw, _: from_python(raw),
    "dict": lambda raw, _: config_from_dict(raw),
    "--set": lambda raw, _: load_config(None, flatten(raw)),
    "file": from_file,
}


def nest(key: str, value: Any, **siblings: Any) -> dict[str, Any]:
    *path, leaf = key.split(".")
    raw: dict[str, Any] = {leaf: value, **siblings}
    for part in reversed(path):
        raw = {part: raw}
    return raw


def bad_values(field: dataclasses.Field, hint: Any) -> list[tuple[str, Any]]:
    """(what is wrong, value) for every check the field declares."""
    checks, cases = field.metadata.get("checks", {}), []
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    base = inner[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) else hint
    if typing.get_origin(base) is typing.Literal:
        return [("an unknown choice", "no-such-choice"), ("not a string", 3)]
    if base is bool:
        return [("not a bool", "yes")]
    if base is str:
        return [("not a string", 3)]
    if typing.get_origin(base) is list:
        cases.append(("not a list", "x"))
        if "length" in checks:
            cases.append(("the wrong length", [1] * (checks["length"] + 1)))
        if checks.get("min_length"):
            cases.append(("too short", []))
        if "ge" in checks or "gt" in checks:
            cases.append(
                (
                    "an element out of range",
                    [checks.get("ge", checks.get("gt", 0)) - 1] * max(2, checks.get("length", 2)),
                )
            )
        return cases
    cases.append(("not a number", "fast"))
    if base is float:
        cases += [("infinite", math.inf), ("NaN", math.nan)]
    if base is int:
        cases.append(("not an integer", 1.5))
    for bound, value in (("gt", 0), ("ge", -1), ("lt", 0), ("le", 1)):
        if bound in checks:
            cases.append((f"out of range ({bound})", checks[bound] + value))
    return cases


def other_choice(section: type, applies: tuple[str, ...]) -> str:
    return next(choice for choice in typing.get_args(field_types(section)["name"]) if choice not in applies)


def applicable_value(field: dataclasses.Field, hint: Any) -> Any:
    """A valid value other than the default, to set where the field does not apply."""
    default, checks = default_of(field), field.metadata.get("checks", {})
    text = str(hint)
    if isinstance(default, bool):
        return not default
    if "Literal" in text:
        literal = next(a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal)
        return next(choice for choice in typing.get_args(literal) if choice != default)
    if "list" in text:
        element = next(v for v in ((2,) if "int" in text else (0.5, 2.0)) if in_range(v, checks))
        return [element] * checks.get("length", 2)
    if "str" in text:
        return "something"
    start = default if default is not None else checks.get("ge", checks.get("gt", 0))
    numbers = [0.5, 1, 2, start + 1, start * 2] if "float" in text else [1, 2, start + 1, start * 2]
    return next(n for n in numbers if n != default and in_range(n, checks))


def field_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for section_name, section in {**SECTIONS, **{f"train.{k}": v for k, v in NESTED.items()}}.items():
        hints = field_types(section)
        names = typing.get_args(hints["name"]) if "name" in hints else ()
        for f in fields(section):
            key = f"{section_name}.{f.name}"
            applies = f.metadata.get("applies", ())
            siblings = {"name": applies[0]} if applies and f.name != "name" else {}
            for what, value in bad_values(f, hints[f.name]):
                cases.append((f"{key} {what}", nest(key, value, **siblings)))
            if applies and names:
                cases.append(
                    (
                        f"{key} on a choice it does not apply to",
                        nest(key, applicable_value(f, hints[f.name]), name=other_choice(section, applies)),
                    )
                )
    cases += [(f"seed {what}", {"seed": value}) for what, value in (("negative", -1), ("not an integer", 0.5))]
    return cases


CASES = field_cases() + [
    (f"rule {i}: {rule.section or 'across sections'}", rule.example) for i, rule in enumerate(RULES)
]


@pytest.mark.parametrize("what,raw", CASES, ids=[what for what, _ in CASES])
def test_every_construction_path_gives_the_same_one_line_error(what: str, raw: dict, tmp_path: Path) -> None:
    messages = {}
    for path, build in PATHS.items():
        with pytest.raises(ConfigError) as info:
            build(raw, tmp_path)
        messages[path] = str(info.value)
    assert len(set(messages.values())) == 1, messages
    message = messages["dict"]
    assert "\n" not in message and message.strip() == message
    key = next(iter(flatten(raw))).split("=")[0]
    leaf = key.rsplit(".", 1)[-1].split("[")[0]
    assert leaf in message or what.startswith("rule"), f"{what}: the message does not name {key}: {message}"


def unchecked(cls: type, raw: dict[str, Any]) -> Any:
    """An instance built without validation (defaults, then the raw values), to ask a rule directly."""
    instance = object.__new__(cls)
    for f in dataclasses.fields(cls):
        hint = field_types(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            value = unchecked(hint, raw.get(f.name, {}))
        else:
            value = raw.get(f.name, default_of(f))
        object.__setattr__(instance, f.name, value)
    return instance


@pytest.mark.parametrize("index", range(len(RULES)))
def test_each_rule_example_fails_on_its_own_rule(index: int) -> None:
    rule = RULES[index]
    config = unchecked(Config, rule.example)
    expected = rule.check(config if rule.section == "" else getattr(config, rule.section))
    assert expected, f"the example does not break its rule: {rule.example}"
    with pytest.raises(ConfigError) as info:
        config_from_dict(rule.example)
    assert str(info.value) == expected
