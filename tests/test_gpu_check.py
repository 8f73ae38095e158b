"""The GPU runbook's dry run on CPU (scripts/gpu_check.sh OUT --device cpu --smoke), so it does not rot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.mark.full
def test_the_gpu_runbook_dry_runs_on_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        ["scripts/gpu_check.sh", str(tmp_path), "--device", "cpu", "--smoke"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every step passed" in done.stdout
    for name in (
        "precision_step_times_cpu_*.md",
        "throughput_cpu_fp32_*.md",
        "throughput_cpu_fp32_*.png",
        "scaling_cpu_fp32_*.md",
        "scaling_cpu_fp32_*.png",
        "peers_cpu_*.md",
    ):
        assert list(tmp_path.glob(name)), name
    assert "| gpt |" in next(tmp_path.glob("throughput_cpu_fp32_*.md")).read_text()  # tokens/s and MFU rows


def test_the_gpu_runbook_refuses_a_bad_argument_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(["scripts/gpu_check.sh", str(tmp_path), "--device", "tpu"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
