"""Acceptance for clipping, accumulation and the non-finite guard, in float64."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from loopspec.comparison import compare_runs
from loopspec.errors import TrainingDiverged
from loopspec.metrics import read_metrics
from loopspec.weights import load_weights
from parity_tests.matrix import parity_config
from parity_tests.selection import FULL, cases
from paritykit.harness import run_backends, summary

RTOL = 1e-10
JAX_IMPLEMENTATIONS = ("manual", "multisteps")


def with_train(raw: dict, **train: object) -> dict:
    raw = copy.deepcopy(raw)
    raw["train"].update(train)
    return raw


def agree(a: Path, b: Path, rtol: float = RTOL) -> None:
    report = compare_runs(a, b, rtol)
    assert report.agree, f"\n{a} vs {b}\n" + report.render()


def clipped_share(run: Path) -> float:
    steps = read_metrics(run / "metrics.jsonl")["step"]
    return float(np.mean([s["clipped"] for s in steps]))


@pytest.mark.parametrize(
    "model,optimizer,loss,clip",
    [
        ("mlp", "adamw", "focal", {"clip_grad_norm": 0.05}),
        ("cnn", "sgd", "cross_entropy", {"clip_grad_norm": 1.5}),
        pytest.param("fashion_mlp", "rmsprop", "cross_entropy", {"clip_grad_value": 0.01}, marks=FULL),
    ],
)
def test_clipping_runs_agree_with_clipping_active(
    model: str, optimizer: str, loss: str, clip: dict, tmp_path: Path
) -> None:
    runs = run_backends(with_train(parity_config(model, optimizer, loss), **clip), tmp_path)
    agree(runs["torch"], runs["jax"])
    share = clipped_share(runs["torch"])
    print(
        f"{model}/{optimizer}/{loss} {clip}: clipping acted on {share:.0%} of "
        f"{len(read_metrics(runs['torch'] / 'metrics.jsonl')['step'])} steps"
    )
    assert 0.2 <= share <= 0.95, f"clipping should act on a meaningful share of steps, got {share:.0%}"


def test_accumulation_matches_the_large_batch_without_batchnorm(tmp_path: Path) -> None:
    """4 micro-batches of 16 = one batch of 64, on each backend and each JAX implementation."""
    base = parity_config("fashion_mlp", "adam", "cross_entropy", steps=10_000)
    # 768 training samples: 12 windows per epoch; 8x8 images keep the 6 runs to seconds.
    base["data"].update(num_samples=1000, val_fraction=0.232, image_size=8)
    base["train"]["epochs"] = 4  # 48 updates: a wrong average parts at the first
    large = copy.deepcopy(base)
    large["data"]["batch_size"] = 64
    small = copy.deepcopy(base)
    small["data"]["batch_size"] = 16
    big_runs = run_backends(large, tmp_path / "large")
    for implementation in JAX_IMPLEMENTATIONS:
        runs = run_backends(
            with_train(small, accumulation_steps=4, accumulation=implementation), tmp_path / implementation
        )
        assert len(read_metrics(runs["jax"] / "metrics.jsonl")["step"]) == 48
        for backend in ("torch", "jax"):
            agree(big_runs[backend], runs[backend])
        agree(runs["torch"], runs["jax"])


@pytest.mark.parametrize("accumulation_steps", cases([3, 4], lambda steps: steps == 3))
def test_accumulation_with_batchnorm_agrees(accumulation_steps: int, tmp_path: Path) -> None:
    """BatchNorm statistics per micro-batch (the MLP's BatchNorm layers); 20 micro-batches per epoch leave
    a trailing partial window for k=3 (2 micro-batches) and none for k=4; three epochs: two boundaries."""
    raw = with_train(
        parity_config("mlp", "adamw", "cross_entropy", steps=10_000), epochs=3, accumulation_steps=accumulation_steps
    )
    runs = {impl: run_backends(with_train(raw, accumulation=impl), tmp_path / impl) for impl in JAX_IMPLEMENTATIONS}
    agree(runs["manual"]["torch"], runs["manual"]["jax"])
    agree(runs["manual"]["torch"], runs["multisteps"]["jax"])
    agree(runs["manual"]["jax"], runs["multisteps"]["jax"])
    steps = read_metrics(runs["manual"]["torch"] / "metrics.jsonl")["step"]
    assert len(steps) == 3 * -(-20 // accumulation_steps)
    tracked = load_weights(runs["manual"]["jax"] / "final.safetensors")["blocks.0.norm.num_batches_tracked"]
    assert int(tracked) == 3 * 20  # one BatchNorm update per micro-batch


def test_clipping_accumulation_and_onecycle_together(tmp_path: Path) -> None:
    raw = with_train(
        parity_config("mlp", "sgd", "focal", steps=10_000), epochs=16, accumulation_steps=2, clip_grad_norm=0.05
    )
    raw["schedule"] = {"name": "onecycle", "max_lr": 0.05}
    for implementation in JAX_IMPLEMENTATIONS:
        runs = run_backends(with_train(raw, accumulation=implementation), tmp_path / implementation)
        agree(runs["torch"], runs["jax"])
        steps = read_metrics(runs["torch"] / "metrics.jsonl")["step"]
        assert len(steps) == 160 and 0.2 <= clipped_share(runs["torch"]) <= 0.95
        assert len({s["momentum"] for s in steps}) > 100  # momentum cycled per applied update


# make test: the skip inside an accumulation window, both ways; CI also runs it without accumulation
@pytest.mark.parametrize("accumulation", cases(["none", "manual", "multisteps"], lambda mode: mode != "none"))
def test_nan_batch_is_skipped_the_same_way(nan_in_training_row, accumulation: str, tmp_path: Path) -> None:
    raw = with_train(parity_config("mlp", "adam", "bce_pos_weight", steps=10_000), epochs=6, on_nonfinite="skip")
    if accumulation != "none":
        raw["train"].update(accumulation_steps=3, accumulation=accumulation)
    runs = run_backends(raw, tmp_path)
    agree(runs["torch"], runs["jax"])
    for backend, run in runs.items():
        records = read_metrics(run / "metrics.jsonl")
        assert summary(run)["skipped_updates"] == 6 and [e["skipped"] for e in records["epoch"]] == [1] * 6
        weights = load_weights(run / "final.safetensors")
        assert all(np.isfinite(v).all() for v in weights.values()), f"{backend}: the NaN reached the weights"
    torch_skips = [i for i, s in enumerate(read_metrics(runs["torch"] / "metrics.jsonl")["step"]) if s["skipped"]]
    jax_skips = [i for i, s in enumerate(read_metrics(runs["jax"] / "metrics.jsonl")["step"]) if s["skipped"]]
    assert torch_skips == jax_skips and len(torch_skips) == 6


@pytest.mark.parametrize("accumulation", ["none", "multisteps"])
def test_nan_batch_stops_both_backends_at_the_same_update(
    nan_in_training_row, accumulation: str, tmp_path: Path
) -> None:
    raw = with_train(parity_config("cnn", "sgd", "cross_entropy", steps=10_000), epochs=3)
    if accumulation != "none":
        raw["train"].update(accumulation_steps=2, accumulation=accumulation)
    messages = {}
    for backend in ("torch", "jax"):
        with pytest.raises(TrainingDiverged) as info:
            run_backends(raw, tmp_path, backends=(backend,))
        messages[backend] = str(info.value)
    assert messages["torch"] == messages["jax"].replace("/jax/", "/torch/")
    assert "at update" in messages["torch"] and "(epoch 1)" in messages["torch"]
    assert "the input batch holds NaN/inf values" in messages["torch"]
    agree(tmp_path / "torch", tmp_path / "jax")  # the same steps, and the weights from before the failure
    for backend in ("torch", "jax"):
        assert summary(tmp_path / backend)["stopped_by"] == "nonfinite"
        weights = load_weights(tmp_path / backend / "final.safetensors")
        assert all(np.isfinite(v).all() for v in weights.values())


# make test: the recipe with optax.MultiSteps; manual accumulation runs in the tests above, this recipe with it in CI
@pytest.mark.parametrize(
    "implementation", cases(JAX_IMPLEMENTATIONS, lambda implementation: implementation == "multisteps")
)
def test_accumulate_clip_recipe_agrees(implementation: str, tmp_path: Path) -> None:
    from paritykit.harness import recipe

    raw = recipe(
        "configs/intrusion_accumulate_clip.yaml",
        "data.num_samples=2000",
        "train.epochs=2",
        "train.precision=fp64",
        "train.log_every=0",
        f"train.accumulation={implementation}",
        "model.hidden=[32,16]",
        "schedule.warmup=5",
    )
    runs = run_backends(raw, tmp_path)
    agree(runs["torch"], runs["jax"])


def test_torch_read_back_one_update_late_keeps_the_run_bit_for_bit(
    nan_in_training_row, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """torch reads an update back after dispatching the next where that hides a device (CUDA): a NaN
    batch's update, applied before it is judged, is undone and the next one redone; a checkpoint or a
    stop with an update in flight takes the state before it. Forced here on the CPU, the run is the one
    read back at once, bit for bit: every record, checkpoint and final tensor (framework-mode dropout,
    whose random state must survive the redo, and a per-step schedule)."""
    from torchloop.train import TorchBackend

    raw = with_train(parity_config("mlp", "adam", "bce_pos_weight", steps=10_000), epochs=6, on_nonfinite="skip")
    raw["train"].update(max_steps=40, checkpoint={"every_steps": 3, "keep_last": 100}, accumulation_steps=2)
    raw["model"]["dropout_mode"] = "framework"
    raw["schedule"] = {"name": "cosine", "interval": "step"}
    runs = {}
    for lagged in ((), ("cpu",)):
        monkeypatch.setattr(TorchBackend, "lagged_devices", lagged)
        runs[bool(lagged)] = run_backends(raw, tmp_path / str(bool(lagged)), backends=("torch",))["torch"]
    agree(runs[False], runs[True], rtol=0.0)
    records = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in runs.values()]
    for record in (*records[0], *records[1]):
        record.pop("seconds", None)  # the only timing
    assert records[0] == records[1]
    steps = [r for r in records[1] if r["kind"] == "step"]
    assert sum(s["skipped"] for s in steps) >= 4 and steps[-1]["step"] == 40  # stopped mid-epoch, one in flight
    points = sorted(p.name for p in (runs[False] / "checkpoints").glob("step-*"))
    assert points == sorted(p.name for p in (runs[True] / "checkpoints").glob("step-*")) and len(points) >= 13
    for point in points:
        saved = [load_weights(run / "checkpoints" / point / "tensors.safetensors") for run in runs.values()]
        assert saved[0].keys() == saved[1].keys()
        assert all(saved[0][k].tobytes() == saved[1][k].tobytes() for k in saved[0]), point


@pytest.mark.parametrize(
    "implementation", cases(JAX_IMPLEMENTATIONS, lambda implementation: implementation == "manual")
)
def test_jax_batches_gathered_in_the_step_keep_the_run_bit_for_bit(
    implementation: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On an accelerator JAX keeps the training split on the device and each step gathers its rows there;
    forced here on the CPU, the run is the one with host batches, bit for bit: every record and final
    tensor (parity dropout, accumulation with a short last micro-batch; make test: the manual accumulation)."""
    import jax

    import flaxloop.train as flax_train

    raw = parity_config("mlp", "adam", "bce_pos_weight", steps=10_000)
    raw["data"].update(drop_last=False, num_samples=1000)
    raw["train"].update(max_steps=30, accumulation_steps=2, accumulation=implementation)
    place = lambda x, y, device: tuple(jax.device_put((x, y), device))  # noqa: E731
    runs = {}
    for on_device in (False, True):
        monkeypatch.setattr(flax_train, "device_dataset", place if on_device else lambda *_: None)
        runs[on_device] = run_backends(raw, tmp_path / str(on_device), backends=("jax",))["jax"]
    records = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in runs.values()]
    for record in (*records[0], *records[1]):
        record.pop("seconds", None)  # the only timing
    assert records[0] == records[1] and len([r for r in records[1] if r["kind"] == "step"]) == 30
    saved = [load_weights(run / "final.safetensors") for run in runs.values()]
    assert saved[0].keys() == saved[1].keys()
    assert all(saved[0][k].tobytes() == saved[1][k].tobytes() for k in saved[0])
