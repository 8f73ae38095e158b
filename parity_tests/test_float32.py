"""Acceptance in float32: the first 10 steps agree to 1e-5 relative (for the recipes where
float32 rounding allows it; the others are explained below), and a full default run's
validation accuracy differs between backends by no more than one backend's runs with
different seeds differ among themselves."""

from __future__ import annotations

import itertools

import pytest

from parity_tests.compare import compare_runs
from parity_tests.harness import recipe, run_backends, run_both, summary

FIRST_STEPS, RTOL = 10, 1e-5
DEFAULT = "configs/intrusion_mlp_focal.yaml"

# Recipes whose first float32 steps agree to 1e-5 (file-based ones run on generated data of
# the same shape: CI has no dataset files).
RECIPES = {
    "cnn_bn": ("configs/cnn_bn.yaml",),
    "digits_cnn": ("configs/digits_cnn.yaml",),
    "fashion_mlp_sgd": ("configs/fashion_mlp_sgd.yaml", "data.name=synthetic_images", "data.channels=1",
                        "data.image_size=28", "data.num_samples=2000"),
}
# Recipes where two correct float32 runs part faster (README, "What parity means"): the
# default config's AdamW turns the float32 rounding of near-zero gradients (weights fed by
# features that are constant within a batch) into lr-sized update differences; on the
# 3x32x32 CNN a one-ulp change of one weight already moves torch against itself by ~1e-5
# within 10 steps. For them the first step is held to 1e-6 and the semantics to 1e-10 in float64.
EXCEPTIONS = {
    "intrusion_mlp_focal": (DEFAULT,),
    "cifar10_cnn_adam": ("configs/cifar10_cnn_adam.yaml", "data.name=synthetic_images", "data.channels=3",
                         "data.image_size=32", "data.num_samples=2000"),
}


def first_steps(name_args: tuple[str, ...], dtype: str) -> dict:
    path, *overrides = name_args
    precision = {"float32": "fp32", "float64": "fp64"}[dtype]
    return recipe(path, *overrides, f"train.max_steps={FIRST_STEPS}", f"train.precision={precision}", "train.log_every=0")


@pytest.mark.parametrize("name", list(RECIPES))
def test_first_steps_agree_in_float32(name: str, tmp_path) -> None:
    """Judged on the loss trajectory. grad_norm is shown, not judged: in float32 a near-tie in
    a max-pool window can send a gradient to a different (equally valid) pixel in each
    framework, which moves the gradient norm more than the loss (digits: 2.6e-4 vs 2e-6)."""
    report = run_both(first_steps(RECIPES[name], "float32"), tmp_path, RTOL, steps=FIRST_STEPS)
    print(report.render())
    assert report.max_rel("step loss") <= RTOL, "\n" + report.render()


@pytest.mark.parametrize("name", list(EXCEPTIONS))
def test_float32_exceptions_agree_at_step_one_and_in_float64(name: str, tmp_path) -> None:
    float32 = run_both(first_steps(EXCEPTIONS[name], "float32"), tmp_path / "f32", 1e-6, steps=1)  # no update yet
    float64 = run_both(first_steps(EXCEPTIONS[name], "float64"), tmp_path / "f64", 1e-10, steps=FIRST_STEPS)
    ten_steps = compare_runs(tmp_path / "f32" / "torch", tmp_path / "f32" / "jax", RTOL)
    print(f"{name}: float32 step 1 {float32.max_rel('step loss'):.1e}, float32 first {FIRST_STEPS} steps "
          f"{ten_steps.max_rel('step loss'):.1e}, float64 first {FIRST_STEPS} steps {float64.max_rel('step loss'):.1e}")
    assert float32.agree, "\n" + float32.render()
    assert float64.agree, "\n" + float64.render()


def test_default_run_accuracy_within_seed_band(tmp_path) -> None:
    runs = {}
    for seed in (0, 1, 2):
        raw = recipe(DEFAULT, f"seed={seed}", "train.log_every=0")
        backends = ("torch", "jax") if seed == 0 else ("torch",)
        for backend, run in run_backends(raw, tmp_path / f"seed{seed}", backends).items():
            runs[backend, seed] = summary(run)["val_acc"]
    seed_band = max(abs(runs["torch", a] - runs["torch", b]) for a, b in itertools.combinations((0, 1, 2), 2))
    backend_gap = abs(runs["torch", 0] - runs["jax", 0])
    print(f"val_acc: {runs}; torch seed band {seed_band:.5f}; torch-vs-jax gap at seed 0 {backend_gap:.5f}")
    assert seed_band > 0, "the seeds gave identical accuracies: no band to compare against"
    assert backend_gap <= seed_band
