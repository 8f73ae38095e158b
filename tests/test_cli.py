"""Both command lines, as a user runs them: outputs, cross-backend weights, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loopspec.metrics import read_metrics
from loopspec.weights import load_weights, save_weights
from parity_tests.command_line import MODULES, refusal, run_here
from parity_tests.selection import cases
from torchloop.models import TabularMLP

TINY = [
    "--set",
    "data.num_samples=400",
    "--set",
    "model.hidden=[16,8]",
    "--set",
    "train.epochs=2",
    "--set",
    "train.log_every=3",
    "--set",
    "data.batch_size=64",
]


def train(backend: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULES[backend], *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Each command line's run, in this process (a whole run in a subprocess: test_log_line_every_n_steps)."""
    out = tmp_path_factory.mktemp("cli")
    for backend in MODULES:
        args = ["--config", "configs/intrusion_mlp_focal.yaml", "--out", str(out / backend), "--dtype", "float64"]
        assert run_here(backend, *args, *TINY) == 0
    return {backend: out / backend for backend in MODULES}


@pytest.mark.parametrize("backend", list(MODULES))
def test_run_directory_contents(runs: dict[str, Path], backend: str) -> None:
    run = runs[backend]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden"] == [16, 8] and config["train"]["precision"] == "fp64"
    records = read_metrics(run / "metrics.jsonl")
    steps, epochs = records["step"], records["epoch"]
    assert len(steps) == 2 * 5  # 320 training samples / 64, two epochs
    assert [s["step"] for s in steps] == list(range(1, 11))
    assert all({"step", "epoch", "loss", "lr", "grad_norm"} <= set(s) for s in steps)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all({"val_loss", "val_acc", "val_precision", "val_recall", "val_f1"} <= set(e) for e in epochs)
    assert records["summary"][0]["steps"] == 10


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.full), "jax"])
def test_log_line_every_n_steps(tmp_path: Path, backend: str) -> None:
    done = train(backend, "--config", "configs/intrusion_mlp_focal.yaml", "--out", str(tmp_path), *TINY)
    logged = [line for line in done.stdout.splitlines() if " loss " in line and "train_loss" not in line]
    assert [line.split(" step ")[1].split()[0] for line in logged] == ["3", "6", "9"]


@pytest.mark.parametrize("backend", list(MODULES))
def test_final_weights_are_a_torch_state_dict(runs: dict[str, Path], backend: str) -> None:
    model = TabularMLP(41, [16, 8], 1, dropout=0.3).double()
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in load_weights(runs[backend] / "final.safetensors").items()}
    )
    assert int(model.blocks[0].norm.num_batches_tracked) == 10


def test_init_takes_the_other_backends_weights(runs: dict[str, Path], tmp_path: Path) -> None:
    args = ["--config", "configs/intrusion_mlp_focal.yaml", "--out", str(tmp_path), *TINY, "--dtype", "float64"]
    assert run_here("jax", *args, "--init", str(runs["torch"] / "final.safetensors")) == 0
    given, started = load_weights(runs["torch"] / "final.safetensors"), load_weights(tmp_path / "init.safetensors")
    for name in given:
        np.testing.assert_array_equal(started[name], given[name])


USER_ERRORS = [
    (["--set", "optimizer.lrr=1"], "unknown key optimizer.lrr; allowed keys in optimizer: name, lr"),
    (["--set", "model.name=resnet"], "unknown model (model.name) 'resnet'; allowed: mlp, fashion_mlp, cnn"),
    (["--set", "optimizer.lr=fast"], "optimizer.lr must be a number, got 'fast'"),
    (["--set", "data.name=npz", "--set", "data.path=/no/such.npz"], "npz file not found: /no/such.npz"),
    (
        ["--set", "model.name=cnn", "--set", "model.dropout_mode=framework"],
        "model cnn needs images (N, C, H, W); this dataset gives samples of shape (41,)",
    ),
    (["--set", "model.name=cnn"], "model.dropout_mode does not apply to model 'cnn'; it applies to: mlp"),
    (["--set", "train.device=cuda"], "train.device is cuda but"),
    (["--init", "configs/digits_cnn.yaml"], "cannot read configs/digits_cnn.yaml as safetensors"),
    # Loss options the task cannot use (focal on a binary task has one logit; on digits, ten).
    (
        ["--set", "loss.class_weights=[1,3]"],
        "loss.class_weights does not apply: dataset intrusion has 2 classes, "
        "so the focal loss uses one logit; the one-logit (sigmoid) focal loss weights class 1 with loss.alpha",
    ),
    (
        ["--config", "configs/digits_cnn.yaml", "--set", "loss.name=focal", "--set", "loss.alpha=0.5"],
        "loss.alpha does not apply: dataset digits has 10 classes, so the focal loss uses one logit per class",
    ),
]


def on_one_backend(case: tuple) -> bool:
    """make test: each error on one of the backends, alternating (the check runs in loopspec, shared);
    the device check on both, as each backend asks its own framework for the device."""
    backend, args, message = case
    return (
        "train.device=cuda" in args or ([a for a, _ in USER_ERRORS].index(args) + list(MODULES).index(backend)) % 2 == 0
    )


@pytest.mark.parametrize(
    "backend,args,message",
    cases(
        [(backend, args, message) for args, message in USER_ERRORS for backend in MODULES],
        on_one_backend,
        lambda case: f"{case[0]}-{case[2][:40]}",
    ),
)
def test_user_errors_are_one_line_with_exit_code_2(
    capfd: pytest.CaptureFixture, tmp_path: Path, backend: str, args: list, message: str
) -> None:
    if "train.device=cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = [] if "--config" in args else ["--config", "configs/intrusion_mlp_focal.yaml"]
    assert message in refusal(capfd, backend, *config, "--out", str(tmp_path / "run"), *args)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("backend", list(MODULES))
def test_init_with_the_wrong_model_is_refused(tmp_path: Path, backend: str, capfd: pytest.CaptureFixture) -> None:
    save_weights(tmp_path / "w.safetensors", {"head.weight": np.zeros((1, 3))})
    args = ["--config", "configs/intrusion_mlp_focal.yaml", "--out", str(tmp_path / "run")]
    line = refusal(capfd, backend, *args, "--init", str(tmp_path / "w.safetensors"))
    assert "does not fit this model: missing blocks.0.linear.weight" in line
    assert not (tmp_path / "run").exists()


def test_usage_errors_are_one_line(capfd: pytest.CaptureFixture) -> None:
    line = refusal(capfd, "torch", "--config", "configs/digits_cnn.yaml")
    assert line == "python -m torchloop.train: error: the following arguments are required: --out (see --help)"


def test_weights_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing leaves the previous file intact and no partial file behind."""
    import loopspec.weights as weights

    target = tmp_path / "final.safetensors"
    save_weights(target, {"w": np.ones(3)})

    def crash(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", crash)
    with pytest.raises(OSError):
        save_weights(target, {"w": np.zeros(3)})
    np.testing.assert_array_equal(load_weights(target)["w"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["final.safetensors"]


def test_a_diverged_run_is_one_line_with_exit_code_3(capsys: pytest.CaptureFixture) -> None:
    from loopspec.cli import run_cli
    from loopspec.errors import TrainingDiverged

    def diverge(config, out, init=None, **options):
        raise TrainingDiverged("non-finite loss (nan) or gradient norm (nan) at update 7 (epoch 1); likely cause: ...")

    code = run_cli("python -m torchloop.train", "torch", diverge, ["--config", "configs/digits_cnn.yaml", "--out", "x"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "training stopped: non-finite loss" in err
