"""docs/config.md, generated from the schema: every key, its default, its allowed values and range,
the choices it applies to, and what it means (option(..., doc=...)).

    python -m loopspec.config.reference > docs/config.md

tests/test_readme.py fails when the committed file and the generated one differ.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from loopspec.config.rules import default_of, describe_range, field_types
from loopspec.config.schema import Config

HEADER = """# Config reference

Generated from `loopspec/config/schema.py` by `python -m loopspec.config.reference > docs/config.md`
(`tests/test_readme.py` fails when this file is stale). Every key has a default; a file names only what
it changes, and `--set section.key=value` overrides any key. An option that belongs to another
dataset, model, loss, optimizer or schedule than the chosen one is an error (as torch rejects
`momentum` for Adam); every value is checked before anything is written, with one line naming the
key, the problem and the fix.
"""


def shown(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def allowed(hint: Any) -> str:
    """The values a type admits, in words: its Literal choices, or its kind."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return ", ".join(f"`{choice}`" for choice in args)
    if origin is list:
        return f"list of {allowed(args[0])}"
    if origin is dict:
        return "mapping"
    if origin is typing.Union:
        parts = [allowed(arg) for arg in args if arg is not type(None)]
        return " or ".join(parts) + (", or `null`" if type(None) in args else "")
    return {int: "integer", float: "number", bool: "`true`/`false`", str: "string"}.get(hint, str(hint))


def section_rows(cls: type, prefix: str) -> list[str]:
    lines = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        checks = f.metadata.get("checks", {})
        values = allowed(hints[f.name])
        limits = describe_range({k: v for k, v in checks.items() if k in ("gt", "ge", "lt", "le")})
        if limits:
            values += f", {limits}"
        if "length" in checks:
            values += f", {checks['length']} entries"
        elif checks.get("min_length"):
            values += f", at least {checks['min_length']}"
        applies = ", ".join(f"`{name}`" for name in f.metadata.get("applies", ())) or "all"
        lines.append(f"| `{f.name}` | {shown(default_of(f))} | {values} | {applies} | {f.metadata.get('doc', '')} |")
    return lines


def sections(cls: type, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted key, section class) for every section, depth first, in declaration order."""
    found: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        hint = field_types(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a section: its hint is the class
            key = f"{prefix}{f.name}"
            found.append((key, hint))
            found += sections(hint, f"{key}.")
    return found


def render() -> str:
    out = [HEADER, "## top level", "", "| key | default | values | applies to | meaning |", "|---|---|---|---|---|"]
    out += section_rows(Config, "")
    for key, cls in sections(Config):
        doc = (cls.__doc__ or "").strip()
        out += ["", f"## {key}", ""]
        if doc and not doc.startswith(f"{cls.__name__}("):
            out += [doc, ""]
        out += ["| key | default | values | applies to | meaning |", "|---|---|---|---|---|", *section_rows(cls, key)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
