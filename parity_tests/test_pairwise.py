"""The pairwise design (parity_tests/pairwise.py) in float64: every pair of feature values in some
run, each run's two backends at 1e-10 over the whole run. `make test` runs a few rows; CI's
test-rest the whole design; `python -m paritykit.report` runs it and writes docs/PARITY.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity_tests.pairwise import AXES, allowed, covered, design, pairs_of, row_id, run_row
from parity_tests.selection import cases

ROWS = design()


def test_the_design_covers_every_allowed_pair_and_each_row_is_a_valid_config() -> None:
    from loopspec.config import config_from_dict
    from parity_tests.pairwise import row_config

    assert set().union(*(covered(row) for row in ROWS)) == pairs_of(AXES)
    assert all(allowed(row) for row in ROWS)
    for row in ROWS:
        config_from_dict(row_config(row))
    assert len(ROWS) < 60  # pairwise, not the 1.6 million rows of the full product


@pytest.mark.parametrize("index", cases(range(len(ROWS)), lambda i: i == 0, lambda i: row_id(ROWS[i])))
def test_a_design_row_agrees_in_float64(index: int, tmp_path: Path) -> None:
    result = run_row(ROWS[index], tmp_path)
    print(result.report)
    assert result.agree, result.report
    assert result.steps >= 10
