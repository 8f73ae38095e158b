"""`python -m paritykit.report` writes the report and its figures (--quick: a fifth of the design)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paritykit.report import write_report


@pytest.mark.full
def test_the_report_generator_writes_the_page_and_its_figures(tmp_path: Path) -> None:
    assert write_report(tmp_path / "docs", quick=True, work=tmp_path / "work")
    page = (tmp_path / "docs" / "PARITY.md").read_text()
    assert "## The pairwise design, float64" in page and "## A located divergence" in page
    assert "LayerNorm eps" in page  # the located example is diagnosed
    for figure in ("parity_pairs.png", "parity_locate.png"):
        assert (tmp_path / "docs" / figure).stat().st_size > 10_000
