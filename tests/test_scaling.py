"""benchmarks.scaling: the compute-bound criterion on synthetic curves, the report it writes, and a smoke sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scaling
from benchmarks.scaling import compute_bound_from, curves, sentences

BATCHES = [2**k for k in range(5, 13)]  # 32 ... 4096
FLOPS_PER_SAMPLE = 1e6


def rates(us_per_step: list[float], sizes: list[int] = BATCHES) -> list[float]:
    return [FLOPS_PER_SAMPLE * b / (t * 1e-6) for b, t in zip(sizes, us_per_step)]


def test_a_step_that_is_flat_until_256_then_grows_with_the_batch_is_compute_bound_from_256() -> None:
    # 500 us of overhead until the work outgrows it at batch 256, then linear: FLOP/s flat from 256 on
    times = [max(500.0, 500.0 * b / 256) for b in BATCHES]
    assert BATCHES[compute_bound_from(rates(times))] == 256


def test_a_step_of_fixed_overhead_plus_linear_work_turns_where_the_work_is_about_four_fifths() -> None:
    # t = 1000 + b us: FLOP/s ~ b / (1000 + b), best at 4096 is 0.804; 80% of it needs b >= 1801, so 2048
    times = [1000.0 + b for b in BATCHES]
    assert BATCHES[compute_bound_from(rates(times))] == 2048


def test_a_step_that_costs_the_same_at_every_batch_is_never_compute_bound() -> None:
    assert compute_bound_from(rates([800.0] * len(BATCHES))) is None


def test_only_the_largest_point_meeting_the_test_is_not_compute_bound_within_the_sweep() -> None:
    # still 30% faster per FLOP at the last doubling: the last point alone cannot show a plateau
    times = [500.0] * (len(BATCHES) - 1) + [500.0 * 2 / 1.3]
    assert compute_bound_from(rates(times)) is None


def test_a_step_already_linear_at_the_smallest_batch_is_compute_bound_from_it() -> None:
    assert compute_bound_from(rates([3.0 * b for b in BATCHES])) == 0


def synthetic_report() -> dict:
    """Two curves per sweep: the library step turns at 256, the bare one never does."""
    rows = []
    for sweep, sizes in (("batch", BATCHES), ("width", [64, 128, 256, 512])):
        for mode, time_of in (("jit", lambda n: max(500.0, 500.0 * n / 256)), ("bare_jit", lambda n: 400.0)):
            for n in sizes:
                us = time_of(n)
                rows.append(
                    {
                        "sweep": sweep,
                        "backend": "jax",
                        "mode": mode,
                        "batch_size": n if sweep == "batch" else 256,
                        "width": n if sweep == "width" else 256,
                        "us_median": us,
                        "achieved_flops": FLOPS_PER_SAMPLE * n / (us * 1e-6),
                    }
                )
    return {
        "device": "test device",
        "date": "2026-01-01",
        "versions": "jax 0",
        "precision": "fp32",
        "steps": 2,
        "warmup": 1,
        "repeats": 1,
        "width": 256,
        "width_batch": 256,
        "criterion": scaling.COMPUTE_BOUND,
        "peak_flops": {"jax": 5e9},
        "rows": rows,
        "curves": curves(rows),
    }


def test_the_sentence_is_made_from_the_measured_curves() -> None:
    text = sentences(synthetic_report())
    assert "JAX jit becomes compute-bound at batch 256" in text
    assert "JAX bare_jit is not compute-bound up to batch 4096, FLOP/s still x2.00 over its last step" in text
    assert "JAX jit becomes compute-bound at width 256" in text


def test_the_report_is_json_markdown_and_a_png(tmp_path: Path) -> None:
    report = synthetic_report()
    scaling.write(report, tmp_path / "scaling_test")
    assert json.loads((tmp_path / "scaling_test.json").read_text())["curves"] == report["curves"]
    markdown = (tmp_path / "scaling_test.md").read_text()
    assert "A smoke run" not in markdown
    assert sentences(report) in markdown and "Criterion: a curve is compute-bound" in markdown
    assert "| compute-bound from | 256 | - |" in markdown
    assert (tmp_path / "scaling_test.png").read_bytes().startswith(b"\x89PNG")


def test_the_modes_it_accepts_are_the_benchmarks_own() -> None:
    from benchmarks import jax_bench, torch_bench

    assert scaling.MODES == {"torch": torch_bench.MODES, "jax": jax_bench.MODES}


@pytest.mark.parametrize(
    "argv",
    [["--batch-sizes", "32,abc"], ["--widths", "0,64"], ["--modes", "eager,turbo"], ["--steps", "0"]],
)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        scaling.parse(argv)
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.full  # two processes import torch and jax and time 4 points: about a minute on a shared 2-core CPU
def test_the_smoke_sweep_writes_positive_numbers_and_a_sentence(tmp_path: Path) -> None:
    assert scaling.main(["--smoke", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("scaling_cpu_fp32_smoke_*.json")
    report = json.loads(path.read_text())
    assert {(c["sweep"], c["backend"], c["mode"]) for c in report["curves"]} == {
        (s, b, m) for s in ("batch", "width") for b, m in scaling_modes()
    }
    assert all(r["us_median"] > 0 and r["achieved_flops"] > 0 and r["samples_per_s"] > 0 for r in report["rows"])
    assert all(p > 0 for p in report["peak_flops"].values())
    markdown = path.with_suffix(".md").read_text()
    assert "Batch sweep (MLP, width 256)" in markdown and "Width sweep (MLP, batch 256)" in markdown
    assert "compute-bound" in sentences(report) and sentences(report) in markdown
    assert "A smoke run checks the machinery" in markdown  # its few points judge nothing
    assert path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def scaling_modes() -> list[tuple[str, str]]:
    return [("torch", "bare_eager"), ("torch", "eager"), ("jax", "bare_jit"), ("jax", "jit")]
