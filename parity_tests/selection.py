"""Which parametrized cases `make test` runs, and which only `make test-full` (and CI) runs.

`make test` runs every feature and every parity claim at least once, aiming at under 10 minutes on 2
cores (4.5 measured on an Intel VM, 7 to about 11.5 on an AMD one: docs/usage.md); the rest of each
large matrix carries the `full` mark. Nothing is dropped: `make test-full` runs every case, and CI runs
the `full` cases after `make test`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import pytest

FULL = pytest.mark.full


def cases(values: Iterable[Any], keep: Callable[[Any], bool], ids: Callable[[Any], str] | None = None) -> list[Any]:
    """pytest.param for each value; those `keep` rejects are marked full."""
    params = []
    for value in values:
        args = value if isinstance(value, tuple) else (value,)
        identity = ids(value) if ids is not None else None
        params.append(pytest.param(*args, id=identity, marks=() if keep(value) else FULL))
    return params


def diagonal(rows: Sequence[str], columns: Sequence[str], shift: int = 0) -> set[tuple[str, str]]:
    """Pairs covering every row and every column at least once: row i with column (i + shift) mod n."""
    width = max(len(rows), len(columns))
    return {(rows[i % len(rows)], columns[(i + shift) % len(columns)]) for i in range(width)}
