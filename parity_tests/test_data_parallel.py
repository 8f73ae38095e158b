"""Data-parallel training on the frameworks' own engines, proven equal to one device and to each
other: torch DistributedDataParallel over two gloo processes (torchrun) and JAX jit over a mesh of
two host devices, from the same initial weights and the same global batches.

torch runs go through the real command line: torchrun starts the ranks. JAX runs in the test process,
which conftest.py gives two host devices (jax_num_cpu_devices); one JAX run goes through its
command line too, where a fresh process asks for its devices itself (flaxloop.parallel).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from loopspec import fit
from loopspec.checkpoint import checkpoint_root
from loopspec.comparison import compare_runs
from loopspec.metrics import read_metrics
from parity_tests.command_line import refusal, run_process
from parity_tests.selection import cases
from parity_tests.test_precision import OVERFLOW
from paritykit.harness import precision_unavailable

NO_BATCHNORM = {  # the Fashion MLP on synthetic images: no BatchNorm, so N replicas equal one device
    "data": {"name": "synthetic_images", "num_samples": 700, "batch_size": 50, "drop_last": False},
    "model": {"name": "fashion_mlp"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "train": {"epochs": 2, "precision": "fp64", "log_every": 0},
}
BATCHNORM_CNN = {  # 1600 training rows in batches of 45: shards of 23/22, the last batch (25) 13/12
    "data": {"name": "synthetic_images", "num_samples": 2000, "batch_size": 45, "drop_last": False},
    "model": {"name": "cnn", "channels": [4, 8, 8]},
    "optimizer": {"name": "adamw", "lr": 0.002},
    "schedule": {"name": "onecycle", "max_lr": 0.004},
    "train": {"epochs": 17, "precision": "fp64", "accumulation_steps": 2, "clip_grad_norm": 2.0, "log_every": 0},
}

PARITY_DROPOUT = {  # a small GPT (LayerNorm, no BatchNorm) with parity dropout: N replicas equal one device
    "seed": 5,
    "data": {"name": "text", "block_size": 16, "stride": 16, "batch_size": 45, "val_fraction": 0.1},
    "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.2, "dropout_mode": "parity"},
    "loss": {"name": "cross_entropy"},
    "optimizer": {"name": "adamw", "lr": 0.003},
    "train": {"epochs": 1, "max_steps": 12, "precision": "fp64", "log_every": 0},
}


def train(backend: str, raw: dict, out: Path, replicas: int, *extra: str, command_line: bool = False) -> Path:
    """One run: torch's replicas through its command line under torchrun; JAX, and one device, in this
    process (importing a framework and compiling again in a subprocess costs more than the run), or
    through the command line when asked."""
    if not command_line and (backend == "jax" or replicas == 1):
        assert not extra or (len(extra) == 2 and extra[0] == "--resume"), f"only --resume is passed on here: {extra}"
        resume = extra[1] if extra else None
        overrides = [f"train.devices={replicas}", "train.verbose=0"]
        return fit(raw, out, backend=backend, overrides=overrides, resume=resume).out_dir
    return run_process(backend, raw, out, replicas, *extra)


@pytest.mark.parametrize(
    "backend, accumulation",
    cases([("torch", "none"), ("jax", "none"), ("jax", "multisteps")], lambda case: case == ("jax", "none")),
)
def test_two_replicas_equal_one_device_without_batchnorm(backend: str, accumulation: str, tmp_path: Path) -> None:
    raw = NO_BATCHNORM
    if accumulation == "multisteps":  # optax.MultiSteps over windows of 2 micro-batches
        raw = {**raw, "train": {**raw["train"], "accumulation_steps": 2, "accumulation": "multisteps"}}
    one = train(backend, raw, tmp_path / "one", 1)
    two = train(backend, raw, tmp_path / "two", 2, command_line=True)
    report = compare_runs(one, two, rtol=1e-10)  # summed in another order: rounding, 1e-12 measured
    assert report.agree, f"\n{report.render()}"
    steps = read_metrics(two / "metrics.jsonl")["step"]
    assert len(steps) == 2 * (12 if accumulation == "none" else 6)  # 560 rows in 50s: 11 batches and one of 10


# 44: even shards (22/22, last 8/8), the vmapped, sharded path; 45: uneven shards over 306 updates
@pytest.mark.parametrize("batch_size", cases([45, 44], lambda size: size == 44))
def test_ddp_and_jax_sharding_agree_with_batchnorm_accumulation_and_clipping(batch_size: int, tmp_path: Path) -> None:
    raw = {**BATCHNORM_CNN, "data": {**BATCHNORM_CNN["data"], "batch_size": batch_size}}
    if batch_size == 44:  # the 300-update length is the uneven case's; this one checks the sharded path
        raw["train"] = {**raw["train"], "epochs": 3}
    runs = {backend: train(backend, raw, tmp_path / backend, 2) for backend in ("torch", "jax")}
    report = compare_runs(runs["torch"], runs["jax"], rtol=1e-10)
    steps = read_metrics(runs["torch"] / "metrics.jsonl")["step"]
    print(f"{len(steps)} steps, clipped on {sum(s['clipped'] for s in steps)}")
    assert report.agree, f"\n{report.render()}"
    assert len(steps) >= (300 if batch_size == 45 else 54) and 0 < sum(s["clipped"] for s in steps) < len(steps)
    # Rank 0 alone wrote: one record per update, not one per rank.
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    # With BatchNorm, two replicas are a different run from one device (per-replica statistics).
    one = train("torch", raw | {"train": {**raw["train"], "epochs": 1}}, tmp_path / "one", 1)
    assert not compare_runs(one, runs["torch"], rtol=1e-10, steps=10).agree


@pytest.mark.parametrize("backend", cases(["torch", "jax"], lambda backend: backend == "jax"))
def test_parity_dropout_shards_take_their_global_rows_masks(backend: str, tmp_path: Path) -> None:
    """Each replica generates the masks of its shard's global rows (shards of 23 and 22 rows; each row's
    masks (16, 16), and (2, 16, 16) in attention), so without BatchNorm two replicas are one device's run."""
    one = fit(PARITY_DROPOUT, tmp_path / "one", backend=backend).out_dir  # one device: in this process
    two = train(backend, PARITY_DROPOUT, tmp_path / "two", 2)
    report = compare_runs(one, two, rtol=1e-10)
    assert report.agree, f"\n{report.render()}"
    without = copy.deepcopy(PARITY_DROPOUT)  # the masks act: without them the first loss is another
    without["model"]["dropout"] = 0.0
    loss = read_metrics(one / "metrics.jsonl")["step"][0]["loss"]
    plain = fit(without, tmp_path / "none", backend=backend).history["step"][0]["loss"]
    assert abs(plain - loss) > 1e-6 * abs(plain)


@pytest.mark.full  # make test: the loss-scale sequence on one device (test_precision), DDP in fp32
def test_fp16_loss_scale_sequences_are_identical_with_two_replicas(tmp_path: Path) -> None:
    if reason := precision_unavailable("jax", "fp16"):
        pytest.skip(reason)
    raw = copy.deepcopy(OVERFLOW)  # an fp16 config built to overflow, with weights held still
    raw["data"]["num_samples"] = 4000
    raw["train"].update(epochs=20, max_steps=600)
    raw["train"]["loss_scale"]["growth_interval"] = 20
    runs = {backend: train(backend, raw, tmp_path / backend, 2) for backend in ("torch", "jax")}
    steps = {backend: read_metrics(run / "metrics.jsonl")["step"] for backend, run in runs.items()}
    scales = [s["loss_scale"] for s in steps["torch"]]
    assert [s["loss_scale"] for s in steps["jax"]] == scales and len(scales) >= 600
    assert [s["skipped"] for s in steps["jax"]] == [s["skipped"] for s in steps["torch"]]
    assert sum(s["skipped"] for s in steps["torch"]) >= 10 and sum(b > a for a, b in zip(scales, scales[1:])) >= 10


@pytest.mark.parametrize("backend", cases(["torch", "jax"], lambda backend: backend == "jax"))
def test_a_data_parallel_run_resumes_bitwise(backend: str, tmp_path: Path) -> None:
    """Stopped mid-epoch and resumed (into another directory) with 2 replicas: the same run. The even-shard
    case's config above (its compiled programs too), saving every 4 updates."""
    raw = {**BATCHNORM_CNN, "data": {**BATCHNORM_CNN["data"], "batch_size": 44}}
    raw["train"] = {**raw["train"], "epochs": 3, "checkpoint": {"every_steps": 4, "keep_last": 100}}
    full = train(backend, raw, tmp_path / "full", 2)
    checkpoint = checkpoint_root(full) / "step-00000028"  # epoch 2 of 3, mid-epoch (19 updates each)
    resumed = train(backend, raw, tmp_path / "resumed", 2, "--resume", str(checkpoint))
    report = compare_runs(full, resumed, rtol=0.0)
    assert report.agree, f"\n{report.render()}"
    assert len(read_metrics(resumed / "metrics.jsonl")["step"]) == len(read_metrics(full / "metrics.jsonl")["step"])


def test_replicas_without_their_engine_are_refused_in_one_line(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """The command lines' refusals, in this process (nothing trains before them)."""
    base = ["--config", "intrusion_mlp_focal", "--out", str(tmp_path / "run"), "--set", "train.devices=2"]
    assert "torchrun --nproc_per_node 2" in refusal(capfd, "torch", *base)
    refusal(capfd, "jax", *base, "--set", "train.device=cuda")
    # 9600 training rows in batches of 9597: a last batch of 3 rows
    assert "the epoch's last batch (3 rows)" in refusal(capfd, "jax", *base, "--set", "data.batch_size=9597")
    assert not (tmp_path / "run").exists()
