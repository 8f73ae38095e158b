"""Acceptance for mixed precision on CPU: the fp16 loss-scale trajectory is identical on both
backends; over seeds 0-4, bf16/fp16 accuracy is not significantly below fp32's, and the two
backends' mixed-precision runs are not significantly different (paritykit/statistics.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from loopspec.config import config_from_dict
from loopspec.errors import UserError
from loopspec.metrics import read_metrics
from parity_tests.precision_cases import PRECISION_CASES, precision_case
from parity_tests.selection import cases
from paritykit.harness import precision_unavailable, run_backends, summary
from paritykit.statistics import SEEDS, compare

pytestmark = pytest.mark.float32

# Built to overflow: an initial scale of 2^30 overflows fp16 for ~13 halvings, then the scale
# grows every 50 finite updates and overflows again: a sawtooth with a growth and a skip every
# 50 steps. The weights are held still (lr 1e-9) so every overflow decision is far from fp16's
# limit: with real training (lr 0.01) the backends agree until the first decision that lands
# within fp16 rounding of the limit (measured: attempt 798), which only bitwise-identical fp16
# kernels could avoid.
OVERFLOW = {
    "seed": 0,
    "data": {"name": "intrusion", "num_samples": 6400, "batch_size": 64, "eval_batch_size": 4096, "drop_last": True},
    "model": {"name": "mlp", "hidden": [64, 32], "dropout": 0.0},
    "loss": {"name": "bce"},
    "optimizer": {"name": "sgd", "lr": 1e-9, "momentum": 0.9},
    "train": {
        "epochs": 1000,
        "max_steps": 3000,
        "precision": "fp16",
        "log_every": 0,
        "loss_scale": {"init_scale": 2.0**30, "growth_interval": 50},
    },
}


def require(precision: str, backends: tuple[str, ...] = ("torch", "jax")) -> None:
    """Skip, with the CLI's reason, where this machine cannot run `precision` (XLA's fp16 on CPUs without F16C)."""
    for backend in backends:
        reason = precision_unavailable(backend, precision)
        if reason:
            pytest.skip(reason)


def step_records(run: Path) -> list[dict]:
    return read_metrics(run / "metrics.jsonl")["step"]


@pytest.mark.parametrize("variant", cases(["plain", "accumulation-and-clipping"], lambda v: v != "plain"))
def test_loss_scale_trajectory_is_identical(variant: str, tmp_path: Path) -> None:
    raw = copy.deepcopy(OVERFLOW)
    if variant != "plain":  # unscale -> clip -> step -> update, once per window of 2 micro-batches
        raw["data"]["batch_size"] = 32
        raw["train"].update(accumulation_steps=2, clip_grad_norm=0.5)
        # make test's case: as many growths and skips in 1,200 updates as the plain case has in 3,000
        raw["train"].update(max_steps=1200, loss_scale={**raw["train"]["loss_scale"], "growth_interval": 20})
    require("fp16")
    runs = run_backends(raw, tmp_path)
    torch_steps, jax_steps = step_records(runs["torch"]), step_records(runs["jax"])
    scales = [s["loss_scale"] for s in torch_steps]
    print(
        f"{variant}: {len(torch_steps)} attempts, {sum(s['skipped'] for s in torch_steps)} skipped, "
        f"scales {min(scales):g}..{max(scales):g}, {sum(b > a for a, b in zip(scales, scales[1:]))} growths"
    )
    assert len(torch_steps) == len(jax_steps) >= raw["train"]["max_steps"]
    assert [s["loss_scale"] for s in jax_steps] == scales
    assert [s["skipped"] for s in jax_steps] == [s["skipped"] for s in torch_steps]
    assert sum(b > a for a, b in zip(scales, scales[1:])) >= 30, "growth must be part of the trajectory"
    assert sum(s["skipped"] for s in torch_steps) >= 30
    applied = [(a, b) for a, b in zip(torch_steps, jax_steps) if not a["skipped"]]
    # The logged norm is of the unscaled gradient on both sides (a scaled one would be 2^17 larger).
    norm_gap = max(abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] for a, b in applied)
    assert norm_gap < 1e-2
    if variant != "plain":
        assert [a["clipped"] for a, _ in applied] == [b["clipped"] for _, b in applied]


_RUNS: dict[tuple, Path] = {}


def run_once(model: str, precision: str, seed: int, backend: str, root: Path) -> Path:
    """Each run once per test session: several tests read the same runs."""
    key = (model, precision, seed, backend)
    if key not in _RUNS:
        _RUNS[key] = run_backends(
            precision_case(model, precision, seed), root / f"{model}-{precision}-{seed}", backends=(backend,)
        )[backend]
    return _RUNS[key]


def final(model: str, precision: str, backend: str, metric: str, root: Path) -> list[float]:
    """The metric of the last epoch's weights, one value per seed."""
    return [summary(run_once(model, precision, seed, backend, root))[metric] for seed in SEEDS]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("precision")


MIXED = ("bf16", "fp16")


ACCURACY_CASES = [(m, p, b) for m in PRECISION_CASES for p in MIXED for b in ("torch", "jax")]


@pytest.mark.parametrize(
    "model,precision,backend",
    cases(ACCURACY_CASES, lambda case: case == ("mlp", "bf16", "jax"), "-".join),  # fp16: the agreement test below
)
def test_mixed_precision_accuracy_not_below_fp32(model: str, precision: str, backend: str, root: Path) -> None:
    """bf16 or fp16 accuracy over seeds 0-4 against fp32's over the same seeds, one-sided: doing
    better is not a failure. One family of comparisons: every model, backend and precision."""
    require(precision, (backend,))
    family = len(PRECISION_CASES) * 2 * len(MIXED)
    result = compare(
        f"{model} {backend} {precision} val_acc",
        final(model, precision, backend, "val_acc", root),
        final(model, "fp32", backend, "val_acc", root),
        "less",
        comparisons=family,
    )
    print(result.render())
    assert result.passed, result.render()


@pytest.mark.parametrize(
    "model,precision",
    cases(
        [(m, p) for m in PRECISION_CASES for p in MIXED],
        lambda case: case == ("mlp", "fp16"),  # make test: bf16 in the accuracy test above
        "-".join,
    ),
)
def test_backends_agree_in_mixed_precision(model: str, precision: str, root: Path) -> None:
    """The two backends' mixed-precision runs over seeds 0-4 as samples of one distribution:
    final val_loss and val_acc, two-sided (neither backend may drift)."""
    require(precision)
    family = len(PRECISION_CASES) * len(MIXED) * 2
    results = [
        compare(
            f"{model} {precision} {metric} jax vs torch",
            final(model, precision, "jax", metric, root),
            final(model, precision, "torch", metric, root),
            "two-sided",
            comparisons=family,
        )
        for metric in ("val_loss", "val_acc")
    ]
    report = "\n".join(result.render() for result in results)
    print(report)
    assert all(result.passed for result in results), report


def test_unsupported_precision_fails_at_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A device without the precision is refused before training, naming it and the alternatives."""
    import torch

    import flaxloop.precision
    import torchloop.precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    with pytest.raises(
        UserError, match="train.precision bf16 needs a GPU with bfloat16 support; Old GPU has none: use fp32, fp16"
    ):
        torchloop.precision.check_precision("bf16", torch.device("cuda"))

    def no_half(*args, **kwargs):
        raise RuntimeError("no fp16 kernels")

    monkeypatch.setattr(torch, "autocast", no_half)
    raw = precision_case("mlp", "fp16")
    with pytest.raises(
        UserError, match=r"train.precision fp16 is not available for torch on cpu \(no fp16 kernels\); use fp32, bf16"
    ):
        run_backends(raw, tmp_path, backends=("torch",))
    assert not (tmp_path / "torch" / "metrics.jsonl").exists()
    monkeypatch.setattr(flaxloop.precision.jax, "jit", lambda fn: no_half)
    with pytest.raises(
        UserError, match=r"train.precision fp16 is not available for JAX on cpu \(RuntimeError\); use fp32, bf16"
    ):
        run_backends(raw, tmp_path, backends=("jax",))
    assert config_from_dict(raw).train.precision == "fp16"
