"""The README's main job end to end, on a small version of the default config: `python -m
paritykit.run`'s main in this process (it starts each training as its own process, as a user sees
it; a process around it would only import the frameworks once more)."""

from __future__ import annotations

from pathlib import Path

import pytest

import paritykit.run


def test_main_job_trains_both_backends_in_both_dtypes_and_passes(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    overrides = [
        "data.num_samples=1600",  # 1280 training rows: 10 whole batches, no second program for a short one
        "train.epochs=3",
        "train.log_every=0",
    ]
    code = paritykit.run.main(["--out", str(tmp_path), *[arg for item in overrides for arg in ("--set", item)]])
    shown = capfd.readouterr()  # at the descriptor: the trainings' processes write there too
    assert code == 0, shown.out[-3000:] + shown.err[-3000:]
    out = shown.out
    assert "PASS: the two backends agree to 1e-10" in out
    assert "PASS: the first 30 updates stay within 23 x the self-divergence envelope" in out
    assert "the learning rate is torch's at every update" in out
    assert out.rstrip().endswith("verdict: PASS")
    for dtype in ("float64", "float32"):
        for backend in ("torch", "jax"):
            assert (tmp_path / dtype / backend / "final.safetensors").is_file()
