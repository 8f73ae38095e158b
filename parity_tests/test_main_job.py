"""The README's main job end to end, on a small version of the default config."""

from __future__ import annotations

import subprocess
import sys


def test_main_job_trains_both_backends_in_both_dtypes_and_passes(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "paritykit.run",
            "--out",
            str(tmp_path),
            "--set",
            "data.num_samples=1600",  # 1280 training rows: 10 whole batches, no second program for a short one
            "--set",
            "train.epochs=3",
            "--set",
            "train.log_every=0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "PASS: the two backends agree to 1e-10" in out
    assert "PASS: the first 30 updates stay within 23 x the self-divergence envelope" in out
    assert "the learning rate is torch's at every update" in out
    assert out.rstrip().endswith("verdict: PASS")
    for dtype in ("float64", "float32"):
        for backend in ("torch", "jax"):
            assert (tmp_path / dtype / backend / "final.safetensors").is_file()
