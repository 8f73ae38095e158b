"""Exact resume: an uninterrupted run equals one stopped at update k and resumed.

- The same backend, float32 and float64: every per-step record and the final weights bit for bit,
  with k mid-epoch, at an epoch boundary, after a plateau cut, with accumulation, with fp16 (the
  loss-scale sequence continues) and with framework-mode dropout.
- Across frameworks, float64: torch k steps then JAX N-k steps equals torch N steps to 1e-10,
  and the other way round, for every optimizer with its options, OneCycle momentum and plateau.
- Through the real command line: SIGINT mid-run, then --resume; a kill during a save.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import flaxloop.train
import torchloop.train
from loopspec.checkpoint import checkpoint_root, load_checkpoint, newest_checkpoint
from loopspec.comparison import compare_runs
from loopspec.config import config_from_dict
from loopspec.errors import UserError
from loopspec.metrics import read_metrics
from parity_tests.command_line import MODULES, run_here
from parity_tests.matrix import OPTIMIZERS, parity_config
from parity_tests.selection import cases
from parity_tests.test_precision import OVERFLOW
from paritykit.harness import precision_unavailable, run_backends

FITS = {"torch": torchloop.train.fit, "jax": flaxloop.train.fit}


def base(precision: str = "fp64") -> dict:
    """The BatchNorm + parity-dropout MLP: 20 updates per epoch, 3 epochs, a checkpoint every 7."""
    raw = parity_config("mlp", "adamw", "focal", steps=10_000)
    raw["train"].update(epochs=3, precision=precision, checkpoint={"every_steps": 7, "keep_last": 100})
    return raw


SCENARIOS = {
    # name: (config change, the checkpoint's step to resume from)
    "mid-epoch": (lambda raw: None, 7),
    "epoch boundary": (lambda raw: None, 20),
    "after a plateau cut": (
        lambda raw: raw.update(schedule={"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.9}),
        28,
    ),
    "accumulation": (lambda raw: raw["train"].update(accumulation_steps=3), 7),
    "optax.MultiSteps accumulation": (
        lambda raw: raw["train"].update(accumulation_steps=3, accumulation="multisteps"),
        14,
    ),
    "framework-mode dropout": (lambda raw: raw["model"].update(dropout_mode="framework"), 35),
}


def resume(backend: str, checkpoint: Path, out: Path, raw: dict) -> Path:
    FITS[backend](config_from_dict(copy.deepcopy(raw)), out, resume=checkpoint)
    return out


def checkpoint_at(run: Path, step: int) -> Path:
    path = checkpoint_root(run) / f"step-{step:08d}"
    assert path.exists(), f"no checkpoint at step {step}: {sorted(p.name for p in checkpoint_root(run).iterdir())}"
    return path


# make test's share: each scenario once, and on both backends where the backends keep different state
# (framework-mode dropout: torch's generator, JAX's key); every backend's save and load runs in each.
MAKE_TEST_RESUMES = {
    ("torch", "mid-epoch"),
    ("jax", "epoch boundary"),
    ("torch", "after a plateau cut"),
    ("torch", "accumulation"),
    ("jax", "optax.MultiSteps accumulation"),
    ("torch", "framework-mode dropout"),
    ("jax", "framework-mode dropout"),
}


def alternating(case: tuple) -> bool:
    """make test's share of a matrix: the scenarios above, each in one of the precisions."""
    backend, scenario, precision = case
    in_precision = (list(SCENARIOS).index(scenario) + ("torch", "jax").index(backend)) % 2 == (
        "fp32",
        "fp64",
    ).index(precision)
    return in_precision and (backend, scenario) in MAKE_TEST_RESUMES


@pytest.mark.parametrize(
    "backend,scenario,precision",
    cases([(b, s, p) for b in ("torch", "jax") for s in SCENARIOS for p in ("fp32", "fp64")], alternating, "-".join),
)
def test_resume_is_bitwise_on_one_backend(backend: str, scenario: str, precision: str, tmp_path: Path) -> None:
    change, step = SCENARIOS[scenario]
    raw = base(precision)
    change(raw)
    full = run_backends(raw, tmp_path / "full", (backend,))[backend]
    resumed = resume(backend, checkpoint_at(full, step), tmp_path / "resumed", raw)
    report = compare_runs(full, resumed, rtol=0.0)
    assert report.agree, f"\n{report.render()}"
    assert len(read_metrics(resumed / "metrics.jsonl")["step"]) == len(read_metrics(full / "metrics.jsonl")["step"])


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_fp16_loss_scale_sequence_continues(backend: str, tmp_path: Path) -> None:
    if reason := precision_unavailable(backend, "fp16"):
        pytest.skip(reason)
    raw = copy.deepcopy(OVERFLOW)
    raw["data"]["num_samples"] = 1600
    raw["train"].update(epochs=3, max_steps=None, checkpoint={"every_steps": 10, "keep_last": 100})
    raw["train"]["loss_scale"]["growth_interval"] = 10
    full = run_backends(raw, tmp_path / "full", (backend,))[backend]
    resumed = resume(backend, checkpoint_at(full, 20), tmp_path / "resumed", raw)
    scales = [[s.get("loss_scale") for s in read_metrics(run / "metrics.jsonl")["step"]] for run in (full, resumed)]
    assert scales[0] == scales[1] and len(set(scales[0])) > 3
    report = compare_runs(full, resumed, rtol=0.0)
    assert report.agree, f"\n{report.render()}"


CROSS = {
    **{f"{name} with its options": {"optimizer": dict(options)} for name, options in OPTIMIZERS.items()},
    "OneCycle cycling SGD momentum": {
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "schedule": {"name": "onecycle", "max_lr": 0.05},
    },
    "OneCycle cycling Adam beta1": {
        "optimizer": {"name": "adam", "lr": 1e-3},
        "schedule": {"name": "onecycle", "max_lr": 5e-3, "three_phase": True},
    },
    "plateau": {
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5},
        "schedule": {"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.9},
    },
}


@pytest.mark.parametrize(
    "case,direction",
    cases(
        [(c, d) for c in CROSS for d in ("torch->jax", "jax->torch")],
        lambda pair: list(CROSS).index(pair[0]) % 2 == ("torch->jax", "jax->torch").index(pair[1]),
        " ".join,
    ),
)
def test_resume_across_frameworks(case: str, direction: str, tmp_path: Path) -> None:
    """k steps on one backend, the rest on the other, against the whole run on torch, in float64."""
    first, second = direction.split("->")
    raw = base("fp64")
    raw.update(copy.deepcopy(CROSS[case]))
    reference = run_backends(raw, tmp_path / "torch-full", ("torch",))["torch"]
    source = reference if first == "torch" else run_backends(raw, tmp_path / "jax-full", ("jax",))["jax"]
    resumed = resume(second, checkpoint_at(source, 28), tmp_path / "resumed", raw)
    report = compare_runs(reference, resumed, rtol=1e-10)
    assert report.agree, f"\n{report.render()}"
    steps = read_metrics(resumed / "metrics.jsonl")["step"]
    assert len(steps) == 60 and read_metrics(resumed / "metrics.jsonl")["summary"][-1]["backend"] == second


def test_a_checkpoint_of_another_run_is_one_line(tmp_path: Path) -> None:
    raw = base("fp64")
    full = run_backends(raw, tmp_path / "full", ("torch",))["torch"]
    other = copy.deepcopy(raw)
    other["model"]["hidden"] = [8, 4]
    with pytest.raises(UserError, match=r"is of another run: model.hidden \[32, 16\] in the checkpoint, \[8, 4\] now"):
        resume("jax", checkpoint_at(full, 7), tmp_path / "resumed", other)
    assert not (tmp_path / "resumed").exists()


def test_run_directories_are_owned(tmp_path: Path) -> None:
    raw = base("fp64")
    raw["train"]["epochs"] = 1
    config = config_from_dict(raw)
    torchloop.train.fit(config, tmp_path / "run")
    with pytest.raises(UserError, match="holds another run"):
        torchloop.train.fit(config, tmp_path / "run")
    torchloop.train.fit(config, tmp_path / "run", overwrite=True)
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")["summary"]) == 1


# ------------------------------------------------------------------ through the command line

CLI_ARGS = [
    "--config",
    "configs/intrusion_mlp_focal.yaml",
    "--set",
    "data.num_samples=3000",
    "--set",
    "model.hidden=[32,16]",
    "--set",
    "train.epochs=4",
    "--set",
    "train.log_every=0",
    "--set",
    "train.checkpoint.every_steps=1",
    "--set",
    "data.batch_size=32",
]


def cli(backend: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", MODULES[backend], *CLI_ARGS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_steps(run: Path, steps: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"kind": "step"') >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {steps} steps")


@pytest.mark.parametrize(
    "backend,signum",
    cases(
        [(b, s) for b in ("torch", "jax") for s in (signal.SIGINT, signal.SIGTERM)],
        lambda case: (
            case == ("jax", signal.SIGTERM)
        ),  # make test: one signal on one backend (the CLI handler is shared)
        lambda case: f"{case[0]}-{case[1].name}",
    ),
)
def test_a_signal_saves_and_resume_continues_exactly(backend: str, signum: int, tmp_path: Path) -> None:
    """The signalled run is a process of its own; the uninterrupted run and the resume, the same command
    line in this process (a process would add only importing and compiling)."""
    assert run_here(backend, *CLI_ARGS, "--out", str(tmp_path / "full")) == 0
    run = tmp_path / "stopped"
    process = cli(backend, "--out", str(run))
    wait_for_steps(run, 30, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and f"--resume {run}" in lines[0], err
    assert "Traceback" not in err
    assert run_here(backend, "--resume", str(run), "--out", str(run)) == 0
    report = compare_runs(tmp_path / "full", run, rtol=0.0)
    assert report.agree, f"\n{report.render()}"


def newest_saved_step(run: Path) -> int:
    """The step of the newest checkpoint directory (0: none yet), from the names alone: read while saving."""
    root = checkpoint_root(run)
    steps = [int(path.name.removeprefix("step-")) for path in root.glob("step-*")] if root.exists() else []
    return max(steps, default=0)


@pytest.mark.full  # make test: a kill between saves resumes exactly (the signal tests)
def test_a_kill_during_saves_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    """SIGKILL at random moments of a run that saves after every update: whatever is left loads. Each
    kill waits for the process's own progress (1 to 5 new saves, then up to 40 ms more), not for the
    clock: on a fast machine a timed kill found the 300-update run already finished."""
    run = tmp_path / "run"
    rng = random.Random(0)
    for _ in range(5):
        process = cli("torch", "--out", str(run), "--resume", "auto")
        target = newest_saved_step(run) + rng.randint(1, 5)
        deadline = time.time() + 120
        while newest_saved_step(run) < target and process.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.04)
        assert process.poll() is None, f"the run ended before its kill:\n{process.communicate()[1][-2000:]}"
        process.kill()
        process.communicate()
        assert newest_checkpoint(run, warn=lambda message: None) is not None
        for path in checkpoint_root(run).glob("step-*"):
            load_checkpoint(path)  # every directory with a marker is whole
    done = subprocess.run(
        [sys.executable, "-m", MODULES["torch"], *CLI_ARGS, "--out", str(run), "--resume", "auto"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert read_metrics(run / "metrics.jsonl")["summary"][-1]["epochs"] == 4
    assert not list(checkpoint_root(run).glob(".step-*"))  # partial saves were cleaned up
    assert os.path.exists(run / "final.safetensors")


def test_a_second_process_is_kept_out(tmp_path: Path) -> None:
    from loopspec.run import claim_run_directory

    held = claim_run_directory(tmp_path / "run", resumed_from=None, overwrite=False)  # as a running process holds it
    try:
        with pytest.raises(UserError, match="is in use by another training process"):
            torchloop.train.fit(config_from_dict(base("fp64")), tmp_path / "run")
    finally:
        held.close()
