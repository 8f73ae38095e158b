"""Acceptance in float32: the first 10 steps agree to 1e-5 relative for every recipe, and a
full default run's validation accuracy differs between backends by no more than one
backend's runs with different seeds differ among themselves."""

from __future__ import annotations

import itertools

import pytest

from parity_tests.harness import recipe, run_backends, run_both, summary

FIRST_STEPS, RTOL = 10, 1e-5
DEFAULT = "configs/intrusion_mlp_focal.yaml"

# File-based recipes run on generated data of the same shape (no dataset files in CI).
RECIPES = {
    "intrusion_mlp_focal": (DEFAULT,),
    "cnn_bn": ("configs/cnn_bn.yaml",),
    "digits_cnn": ("configs/digits_cnn.yaml",),
    "fashion_mlp_sgd": ("configs/fashion_mlp_sgd.yaml", "data.name=synthetic_images", "data.channels=1",
                        "data.image_size=28", "data.num_samples=2000"),
}
CIFAR_SHAPED = ("configs/cifar10_cnn_adam.yaml", "data.name=synthetic_images", "data.channels=3",
                "data.image_size=32", "data.num_samples=2000", f"train.max_steps={FIRST_STEPS}", "train.log_every=0")


@pytest.mark.parametrize("name", list(RECIPES))
def test_first_steps_agree_in_float32(name: str, tmp_path) -> None:
    path, *overrides = RECIPES[name]
    raw = recipe(path, *overrides, f"train.max_steps={FIRST_STEPS}", "train.dtype=float32", "train.log_every=0")
    report = run_both(raw, tmp_path, RTOL, steps=FIRST_STEPS)
    print(report.render())
    assert report.agree, "\n" + report.render()


def test_adam_amplifies_float32_rounding_on_the_cifar_recipe(tmp_path) -> None:
    """The documented exception (README, "What parity means"): on 3x32x32 inputs a few conv
    weights have gradients near zero whose float32 sign differs between the frameworks, and
    Adam's first updates are about lr * sign(g), so the runs part by ~2*lr on those weights.
    The same recipe agrees to 1e-5 with SGD, and to 1e-10 in float64."""
    adam = run_both(recipe(*CIFAR_SHAPED), tmp_path / "adam", RTOL, steps=FIRST_STEPS)
    sgd = run_both(recipe(*CIFAR_SHAPED, "optimizer.name=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9"),
                   tmp_path / "sgd", RTOL, steps=FIRST_STEPS)
    adam64 = run_both(recipe(*CIFAR_SHAPED, "train.dtype=float64"), tmp_path / "adam64", 1e-10, steps=FIRST_STEPS)
    print(f"first {FIRST_STEPS} steps, max rel loss diff: adam float32 {adam.max_rel('step loss'):.1e}, "
          f"sgd float32 {sgd.max_rel('step loss'):.1e}, adam float64 {adam64.max_rel('step loss'):.1e}")
    first_adam_step_loss = next(r for r in adam.rows if r.quantity == "step loss")
    assert first_adam_step_loss.first_over is not None and first_adam_step_loss.first_over > 1
    assert sgd.agree, "\n" + sgd.render()
    assert adam64.agree, "\n" + adam64.render()


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
