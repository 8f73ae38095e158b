"""The precision step-time benchmark runs and writes its table (a smoke test: timings are not judged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.precision_times import main


def test_precision_times_writes_a_table(tmp_path: Path) -> None:
    assert main(["--models", "mlp", "--steps", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (table,) = tmp_path.glob("precision_step_times_cpu_*.md")
    data = json.loads(table.with_suffix(".json").read_text())
    assert {(r["precision"], r["backend"]) for r in data["rows"]} == {
        (p, b) for p in ("fp32", "bf16", "fp16") for b in ("torch", "jax")
    }
    assert all(r["us_per_step_median"] > 0 for r in data["rows"])
    assert "| mlp | 256 | fp16 |" in table.read_text()


@pytest.mark.full  # make test: the precision-times report above
def test_throughput_report_has_rows_ratios_and_chart(tmp_path: Path) -> None:
    from benchmarks.throughput import main as throughput

    assert (
        throughput(
            [
                "--models",
                "mlp",
                "--modes",
                "bare_eager,eager,bare_jit,jit,bare_fused,fused",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--repeats",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    (report_path,) = tmp_path.glob("throughput_cpu_fp32_*.json")
    report = json.loads(report_path.read_text())
    assert {r["mode"] for r in report["rows"]} == {"bare_eager", "eager", "bare_jit", "jit", "bare_fused", "fused"}
    assert all(r["samples_per_s"] > 0 and r["share_of_peak"] > 0 for r in report["rows"])
    keys = {r["key"] for r in report["ratios"]}
    assert {"overhead/torch/mlp/eager", "overhead/jax/mlp/jit", "fused/mlp", "backends/mlp"} <= keys
    assert report_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_regression_check_flags_a_moved_ratio(tmp_path: Path, monkeypatch, capsys) -> None:
    import benchmarks.check as check

    def report(ratio: float) -> dict:
        rows = [{"backend": "jax", "model": "mlp", "mode": m, "spread": 0.02} for m in ("jit", "bare_jit")]
        return {
            "device": "test",
            "date": "today",
            "precision": "fp32",
            "steps": 2,
            "warmup": 1,
            "repeats": 1,
            "rows": rows,
            "ratios": [{"key": "overhead/jax/mlp/jit", "what": "jax mlp overhead", "ratio": ratio}],
        }

    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps(report(1.10)))
    monkeypatch.setattr(check, "measure", lambda args: report(1.12))
    assert check.main(["--baseline", str(baseline)]) == 0
    monkeypatch.setattr(check, "measure", lambda args: report(1.60))
    assert check.main(["--baseline", str(baseline)]) == 1
    assert "MOVED" in capsys.readouterr().out
    assert check.main(["--baseline", str(tmp_path / "none.json")]) == 2


def test_model_steps_prints_both_models_cost_and_ratio(capsys) -> None:
    from benchmarks.model_steps import main as model_steps

    # the default recipe's MLP: with a cold compilation cache it costs make test 5 s less than the CNN
    assert model_steps(["--smoke", "--workloads", "default"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "model" in line[:30]]
    rows = [row for row in rows if row[1].strip() != "MFLOP"]
    assert [row[0].strip() for row in rows] == ["library model", "plain Flax loop's model"]
    assert all(float(value) > 0 for row in rows for value in row[1:4])
    assert "library model / plain Flax loop's model: " in out
