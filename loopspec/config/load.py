"""Reading a config: files (YAML, TOML, JSON), `--set key=value` overrides, raw dicts.

A file names only what it changes; every other key keeps its default. The sections are built
through their constructors, so validation is the schema's own (loopspec.config.rules), the
same as for a config built in Python.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, packaged
    import tomli as tomllib
import yaml

from loopspec.config.rules import coerced_fields, field_types
from loopspec.config.schema import Config
from loopspec.errors import ConfigError

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML/TOML/JSON config, apply `key=value` overrides and validate everything."""
    raw = read_config_file(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice in one section (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # values after YAML aliases expand: a config has a few hundred


def check_size(raw: Any) -> None:
    """Refuse a document whose values, counted with aliases expanded, could not be a config (a YAML
    alias bomb expands exponentially in whatever walks it later)."""
    budget, stack = MAX_CONFIG_NODES, [raw]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"the document expands to over {MAX_CONFIG_NODES} values (YAML aliases?); a config has a few hundred"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def recipe_names() -> list[str]:
    """The configs shipped with the package (`--config digits_cnn` works from any directory)."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file path as given, or else a shipped recipe's by name (with or without .yaml)."""
    path = Path(name)
    if path.is_file() or path.parent != Path("."):
        return path
    recipe = RECIPES / (path.name if path.suffix else f"{path.name}.yaml")
    return recipe if recipe.is_file() else path


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections; an empty file is an empty mapping (all defaults)."""
    path = config_path(path)
    if not path.exists() and path.parent == Path(".") and not path.suffix:
        raise ConfigError(f"no config file or recipe named {path}; recipes: {', '.join(recipe_names())}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the file is over {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kB")
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, UniqueKeyLoader)  # JSON is YAML
        check_size(raw)
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config; sections are 3 levels") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot parse {path}: {first_line}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__} ({raw!r:.40})")
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
    return _build(Config, raw, prefix="")


def as_config(config: Config | dict[str, Any] | str | Path, overrides: Sequence[str] = ()) -> Config:
    """A validated Config from a Config, a dict of sections, a file path or a recipe name, with
    `key=value` overrides applied: the same checks whichever form it came in."""
    if isinstance(config, Config):
        raw = config.to_dict()
    elif isinstance(config, dict):
        raw = copy.deepcopy(config)
    elif isinstance(config, (str, Path)):
        raw = read_config_file(config)
    else:
        raise ConfigError(f"config must be a Config, a dict, a file path or a recipe name, not {type(config).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a section (mapping), got {raw!r}")
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in raw if key not in names]
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}; allowed keys{' in ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(names)
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a section: its hint is the class
            values[name] = _build(hint, value, prefix=f"{prefix}{name}.")
        else:
            values[name] = _yaml_number(value, hint)
    return cls(**coerced_fields(cls, values, prefix))


def _yaml_number(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads `1e-3` as a string: numeric strings become numbers where a number is expected."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    numeric = hint is float or float in args or (typing.get_origin(hint) is list and typing.get_args(hint) == (float,))
    if not numeric:
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [float(v) if isinstance(v, str) and _NUMBER.match(v.strip()) else v for v in value]
    return value


def resolved_config(config: Config) -> dict:
    """config.json: every key, with the data path absolute so the file reloads from any directory."""
    values = config.to_dict()
    if values["data"]["path"] is not None:
        values["data"]["path"] = str(Path(values["data"]["path"]).resolve())
    return values
