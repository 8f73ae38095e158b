"""The float and mixed-precision checks on CUDA. Skipped without a GPU visible to both
frameworks (CI has none); run them on a GPU machine with `pytest parity_tests/test_gpu.py`."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
import torch

from parity_tests.matrix import parity_config
from parity_tests.precision_cases import precision_case
from paritykit.harness import recipe, run_both


def jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and jax_has_gpu()), reason="needs CUDA for torch and JAX"),
]


def on_cuda(raw: dict, **train: object) -> dict:
    raw["train"].update(device="cuda", **train)
    return raw


def test_float64_parity_on_cuda(tmp_path: Path) -> None:
    report = run_both(on_cuda(parity_config("cnn", "adamw", "cross_entropy")), tmp_path, 1e-10)
    assert report.agree, "\n" + report.render()


def test_strict_float32_first_steps_on_cuda(tmp_path: Path) -> None:
    """TF32 off on both sides (train.tf32: false): the first 10 float32 steps agree to 1e-5."""
    raw = on_cuda(recipe("configs/digits_cnn.yaml", "train.max_steps=10", "train.log_every=0"), tf32=False)
    report = run_both(raw, tmp_path, 1e-5, steps=10)
    print(report.render())
    assert report.max_rel("step loss") <= 1e-5


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cuda(precision: str, tmp_path: Path) -> None:
    """Both backends train in mixed precision on the GPU and end within the CPU suite's band:
    their final validation accuracies differ by less than the fp32 seed band measured there."""
    from paritykit.harness import summary

    raw = on_cuda(precision_case("cnn", precision))
    run_both(raw, tmp_path, 1.0)
    accuracies = {b: summary(tmp_path / b)["val_acc"] for b in ("torch", "jax")}
    print(precision, accuracies)
    assert abs(accuracies["torch"] - accuracies["jax"]) <= 0.0139  # the CNN's fp32 seed band on CPU
