"""Float32 parity, judged against what rounding alone does to each config on this machine.

Every recipe trains HORIZON steps on both backends, from the canonical weights and data and
again with every weight and input moved by one float32 ulp; the torch-vs-JAX difference of
every step, epoch and tensor must stay within sensitivity.MULTIPLE times the larger of the
two backends' self-divergence (paritykit/sensitivity.py). Nothing here is a tolerance
tuned on one machine: the yardstick is measured in the same process.

The criterion must also fail where it should: each planted difference below is a real
semantic change on the JAX side and must be caught, while a run moved by one ulp must not be.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax.numpy as jnp
import numpy as np
import pytest

import flaxloop.layers
import flaxloop.losses
import flaxloop.models
import flaxloop.optim
import flaxloop.train
from parity_tests.selection import cases
from paritykit.harness import perturbed_runs, recipe, run_backends, sensitivity_verdict, summary
from paritykit.sensitivity import (
    ENVELOPE_SEEDS,
    dataset_files,
    first_updates,
    judge,
    judge_runs,
    norm_rounding,
    record_margin,
    write_perturbed_init,
)
from paritykit.statistics import SEEDS, compare

pytestmark = pytest.mark.float32

HORIZON = 30
# File-based recipes run on generated data of the same shape: CI has no dataset files.
RECIPES = {
    "intrusion_mlp_focal": ("configs/intrusion_mlp_focal.yaml",),
    "cnn_bn": ("configs/cnn_bn.yaml",),
    "digits_cnn": ("configs/digits_cnn.yaml",),
    "fashion_mlp_sgd": (
        "configs/fashion_mlp_sgd.yaml",
        "data.name=synthetic_images",
        "data.path=null",
        "data.channels=1",
        "data.image_size=28",
        "data.num_samples=2000",
    ),
    "cifar10_cnn_adam": (
        "configs/cifar10_cnn_adam.yaml",
        "data.name=synthetic_images",
        "data.path=null",
        "data.channels=3",
        "data.image_size=32",
        "data.num_samples=2000",
    ),
    "gpt_char": ("configs/gpt_char.yaml",),
}


def float32_run(path: str, *overrides: str) -> dict:
    return recipe(path, *overrides, "train.precision=fp32", "train.log_every=0")


# make test: cnn_bn; the default recipe's verdict is the main job's (parity_tests/test_main_job.py)
@pytest.mark.parametrize("name", cases(RECIPES, lambda name: name == "cnn_bn"))
def test_recipe_agrees_within_its_sensitivity(name: str, tmp_path: Path) -> None:
    verdict = sensitivity_verdict(float32_run(*RECIPES[name]), tmp_path, HORIZON)
    print(f"{name}, {HORIZON} float32 steps:\n{verdict.render()}")
    record_margin(name, verdict)
    assert verdict.agree, "\n" + verdict.render()


# Found by the generated configs (test_schedule_exact.py): margins 0.68 (default profile) and 1.05
# (threads2) while the envelope was one perturbed run per backend in the reference's summation order.
# Under BatchNorm, the weight column of a feature that is constant within a batch has a gradient of
# zero in exact arithmetic (BatchNorm ignores a shift of its input); its float32 value is rounding
# noise, which Adam scales up to a sizeable update, so each run follows its own noise, and whether a
# small discrete event happens is up to the draw (the second case, 16 perturbed draws: 6 parted a
# BatchNorm bias as far as torch and JAX did, 10 stayed 20 to 120 times closer).
def rounding_noise_case(samples: int, batch_size: int, accumulation: int, optimizer: dict, schedule: dict) -> dict:
    return {
        "seed": 3,
        "data": {"name": "intrusion", "num_samples": samples, "batch_size": batch_size, "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
        "loss": {"name": "cross_entropy"},
        "optimizer": optimizer,
        "train": {"epochs": 3, "accumulation_steps": accumulation, "precision": "fp32", "log_every": 0, "verbose": 0},
        "schedule": schedule,
    }


ADAM_ON_ROUNDING_NOISE = {
    "AdamW, accumulation 3": rounding_noise_case(273, 24, 3, {"name": "adamw", "lr": 0.002}, {"name": "none"}),
    "Adam, a step cut": rounding_noise_case(
        153,
        24,
        1,
        {"name": "adam", "lr": 0.003},
        {"name": "multistep", "interval": "step", "milestones": [2], "gamma": 0.123456789},
    ),
}


@pytest.mark.full
@pytest.mark.parametrize("case", list(ADAM_ON_ROUNDING_NOISE))
def test_adam_on_rounding_noise_agrees_within_its_sensitivity(case: str, tmp_path: Path) -> None:
    verdict = sensitivity_verdict(ADAM_ON_ROUNDING_NOISE[case], tmp_path, horizon=12)
    print(verdict.render())
    record_margin(f"Adam on rounding noise: {case}", verdict)
    assert verdict.agree, "\n" + verdict.render()


# ------------------------------------------------------------------ planted differences
# The planted runs use the default recipe (BatchNorm MLP, AdamW; cross-entropy with label smoothing for its bug).
PLANT_RECIPE = ("configs/intrusion_mlp_focal.yaml",)
PLANT_HORIZON = 10


def batchnorm_eps_1e3(monkeypatch: pytest.MonkeyPatch) -> None:
    build = flaxloop.train.build_model
    monkeypatch.setattr(
        flaxloop.train, "build_model", lambda cfg, *args: build(dataclasses.replace(cfg, batchnorm_eps=1e-3), *args)
    )


def adam_eps_inside_sqrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        flaxloop.optim, "adam_denominator", lambda nu, bias2_sqrt, eps: jnp.sqrt(nu / bias2_sqrt**2 + eps)
    )


def biased_running_variance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flaxloop.layers, "running_variance", lambda variance, count: variance)


def label_smoothing_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    cross_entropy = flaxloop.losses.cross_entropy
    monkeypatch.setattr(
        flaxloop.losses,
        "cross_entropy",
        lambda logits, labels, smoothing=0.0, weight=None: cross_entropy(
            logits, labels, 1 - (1 - smoothing) ** 2, weight
        ),
    )


PLANTED: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], tuple[str, ...]]] = {
    "batchnorm eps 1e-3 instead of 1e-5": (batchnorm_eps_1e3, ()),
    "Adam eps inside the square root": (adam_eps_inside_sqrt, ()),
    "biased running variance": (biased_running_variance, ()),
    "label smoothing applied twice": (label_smoothing_twice, ("loss.name=cross_entropy", "loss.label_smoothing=0.1")),
}


# make test: the weakest catch (biased running variance) and an optimizer mistake; CI runs all four
MAKE_TEST_PLANTED = {"Adam eps inside the square root", "biased running variance"}


@pytest.mark.parametrize("planted", cases(list(PLANTED), lambda planted: planted in MAKE_TEST_PLANTED))
def test_planted_difference_is_caught(planted: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plant, overrides = PLANTED[planted]
    plant(monkeypatch)
    verdict = sensitivity_verdict(float32_run(*PLANT_RECIPE, *overrides), tmp_path, PLANT_HORIZON)
    print(f"planted {planted}:\n{verdict.render()}")
    record_margin(f"planted: {planted}", verdict)
    assert not verdict.agree, f"the planted difference ({planted}) went unnoticed:\n{verdict.render()}"


def test_one_ulp_perturbation_is_not_caught(tmp_path: Path) -> None:
    """JAX started from weights and data each moved by one ulp (another draw than the envelope's)."""
    raw = first_updates(float32_run(*PLANT_RECIPE), PLANT_HORIZON)
    reference, envelope_inputs = dataset_files(raw, tmp_path, ENVELOPE_SEEDS)
    _, (moved,) = dataset_files(raw, tmp_path / "other_draw", seeds=(7,))
    runs = run_backends(reference, tmp_path / "reference")
    other = run_backends(
        moved,
        tmp_path / "moved",
        backends=("jax",),
        init=write_perturbed_init(runs["torch"] / "init.safetensors", tmp_path / "w7.safetensors", seed=7),
    )
    samples = perturbed_runs(envelope_inputs, runs["torch"] / "init.safetensors", tmp_path / "envelope", tuple(runs))
    verdict = judge_runs((runs["torch"], other["jax"]), [(runs[b], sample[b]) for sample in samples for b in runs])
    print(verdict.render())
    record_margin("one-ulp perturbation", verdict)
    assert verdict.agree, "\n" + verdict.render()


# ------------------------------------------------------------------ accuracy over seeds
DEFAULT_EPOCHS = 5


@pytest.mark.full  # make test: accuracy over seeds in mixed precision (test_precision); CI runs this
def test_default_recipe_accuracy_agrees_over_seeds(tmp_path: Path) -> None:
    """The default recipe (first DEFAULT_EPOCHS epochs) with seeds 0-4 on each backend; final
    val_acc and val_f1 as two samples of one distribution (two-sided: neither backend may drift)."""
    finals: dict[str, list[dict]] = {"torch": [], "jax": []}
    for seed in SEEDS:
        raw = recipe(
            RECIPES["intrusion_mlp_focal"][0], f"seed={seed}", f"train.epochs={DEFAULT_EPOCHS}", "train.log_every=0"
        )
        for backend, run in run_backends(raw, tmp_path / f"seed{seed}").items():
            finals[backend].append(summary(run))
    results = [
        compare(
            f"default recipe {metric} jax vs torch",
            [s[metric] for s in finals["jax"]],
            [s[metric] for s in finals["torch"]],
            "two-sided",
            comparisons=2,
        )
        for metric in ("val_acc", "val_f1")
    ]
    report = "\n".join(result.render() for result in results)
    print(report)
    assert all(result.passed for result in results), report


def test_grad_norm_bound_adds_the_norms_own_rounding() -> None:
    """torch's float32 global norm and JAX's, of the same tensors, differ by their reductions' rounding
    alone; the verdict adds that, measured, to grad_norm's bound, and to nothing else."""
    rng = np.random.default_rng(0)
    shapes = [(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)]
    rounding = norm_rounding([[rng.standard_normal(shape).astype(np.float32) for shape in shapes]])
    assert 0 < rounding < 1e-4  # measured 1.5e-6 to 3.4e-6 on 2-core CPUs; 0 would be two identical reductions
    cross = {("step", "grad_norm"): np.array([1.5 * rounding]), ("step", "loss"): np.array([1.5 * rounding])}
    bounds = {key: np.array([1e-9]) for key in cross}
    verdict = judge(cross, bounds, multiple=1.0, rounding={("step", "grad_norm"): 2 * rounding})
    by_quantity = {check.quantity: check for check in verdict.checks}
    assert by_quantity["grad_norm"].agree and not by_quantity["loss"].agree
