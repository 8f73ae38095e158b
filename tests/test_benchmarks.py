"""The precision step-time benchmark runs and writes its table (a smoke test: timings are not judged)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.precision_times import main


def test_precision_times_writes_a_table(tmp_path: Path) -> None:
    assert main(["--models", "mlp", "--steps", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (table,) = tmp_path.glob("precision_step_times_cpu_*.md")
    data = json.loads(table.with_suffix(".json").read_text())
    assert {(r["precision"], r["backend"]) for r in data["rows"]} == {(p, b) for p in ("fp32", "bf16", "fp16") for b in ("torch", "jax")}
    assert all(r["us_per_step_median"] > 0 for r in data["rows"])
    assert "| mlp | 256 | fp16 |" in table.read_text()
