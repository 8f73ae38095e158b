"""Progress and logging sinks: a bar on a terminal, epoch lines off it, silence when asked;
TensorBoard and CSV files holding exactly what metrics.jsonl holds."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from loopspec.metrics import read_metrics
from parity_tests.command_line import MODULES, run_here

TINY = [
    "--config",
    "configs/intrusion_mlp_focal.yaml",
    "--set",
    "data.num_samples=600",
    "--set",
    "model.hidden=[16,8]",
    "--set",
    "train.epochs=2",
    "--set",
    "data.batch_size=32",
]


def on_a_terminal(args: list[str]) -> str:
    """Run a command with stdout and stderr on a pseudo-terminal; what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    process = subprocess.Popen(args, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=300)
    os.close(leader)
    assert process.returncode == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.full)])  # make test: one each
def test_a_terminal_shows_a_live_bar_per_epoch(backend: str, tmp_path: Path) -> None:
    shown = on_a_terminal([sys.executable, "-m", MODULES[backend], *TINY, "--out", str(tmp_path)])
    assert "epoch 1/2" in shown and "epoch 2/2" in shown
    assert "step/s" in shown or "s/step" in shown, shown  # tqdm's rate
    assert "loss=" in shown and "lr=" in shown  # the bar's postfix
    assert "\r" in shown  # redrawn in place
    assert "step 3 loss" not in shown  # no step lines under a bar


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.full), "jax"])
def test_off_a_terminal_one_line_per_epoch(backend: str, tmp_path: Path) -> None:
    """In a subprocess: in this one, pytest's logging handlers take the lines instead of stdout."""
    done = subprocess.run(
        [sys.executable, "-m", MODULES[backend], *TINY, "--set", "train.log_every=0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    epochs = [line for line in lines if " - train_loss: " in line]
    assert len(epochs) == 2 and epochs[0].startswith(f"[{backend}] epoch 1/2 - ")
    assert "val_loss: " in epochs[0] and "\r" not in done.stdout + done.stderr


@pytest.mark.parametrize("quiet", [["--quiet"], pytest.param(["--set", "train.verbose=0"], marks=pytest.mark.full)])
def test_quiet_is_silent(quiet: list[str], tmp_path: Path) -> None:
    shown = on_a_terminal([sys.executable, "-m", MODULES["torch"], *TINY, *quiet, "--out", str(tmp_path)])
    assert shown.strip() == ""
    assert read_metrics(tmp_path / "metrics.jsonl")["summary"]


def test_library_callers_control_progress_through_logging(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import logging

    import torchloop.train
    from loopspec.config import load_config

    config = load_config(TINY[1], [arg for arg in TINY[2:] if arg != "--set"] + ["train.verbose=2"])
    logging.getLogger("loopspec").setLevel(logging.WARNING)
    try:
        torchloop.train.fit(config, tmp_path / "run")
    finally:
        logging.getLogger("loopspec").setLevel(logging.NOTSET)
    assert "epoch 1/2" not in capsys.readouterr().out


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Read the event files without TensorFlow: TFRecord frames of tensorboardX's Event protobuf."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.full)])
def test_tensorboard_and_csv_hold_what_metrics_jsonl_holds(backend: str, tmp_path: Path) -> None:
    import numpy as np

    assert run_here(backend, *TINY, "--set", "train.loggers=[jsonl,tensorboard,csv]", "--out", str(tmp_path)) == 0
    records = read_metrics(tmp_path / "metrics.jsonl")
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    for kind, index in (("step", "step"), ("epoch", "epoch")):
        for key in ("loss", "lr", "grad_norm") if kind == "step" else ("train_loss", "val_loss", "val_acc", "val_f1"):
            expected = {r[index]: r[key] for r in records[kind]}
            got = scalars[f"{kind}/{key}"]
            assert set(got) == set(expected), key
            np.testing.assert_allclose([got[i] for i in expected], list(expected.values()), rtol=1e-6)  # float32 events
    with open(tmp_path / "metrics_steps.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["loss"]) for r in rows] == [r["loss"] for r in records["step"]]
    with open(tmp_path / "metrics_epochs.csv") as handle:
        assert [float(r["val_loss"]) for r in csv.DictReader(handle)] == [r["val_loss"] for r in records["epoch"]]
