"""What a new user meets in the first hour, each fixed and held here: a resumed run says where it
resumed and its bar starts there, epoch lines carry the lr and a legend for `*`, plots draw values
within the precision's resolution as one line with a difference panel, enum and data-path errors
name what is allowed and where the path is read from, a file that is not an npz says so in the
project's words, and an installed command's --help names that command."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loopspec.config import DataConfig, config_from_dict
from loopspec.data import load_dataset
from loopspec.errors import ConfigError, DataError
from loopspec.sinks import ProgressSink
from paritykit.plots import plot_runs

ROOT = Path(__file__).resolve().parents[1]
STEP = {"kind": "step", "epoch": 3, "loss": 0.5, "lr": 0.00123, "grad_norm": 1.0, "skipped": False}
EPOCH = {"kind": "epoch", "epoch": 3, "step": 40, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.9, "seconds": 1.0}


def progress(caplog: pytest.LogCaptureFixture, **kwargs) -> ProgressSink:
    caplog.set_level(logging.INFO, logger="loopspec")
    return ProgressSink("torch", 5, 20, 2, 0, Path("final.safetensors"), **kwargs)


def test_a_resumed_run_says_where_it_resumed(caplog: pytest.LogCaptureFixture) -> None:
    progress(caplog, resumed={"step": 47, "epoch": 3, "window": 7})
    assert caplog.messages == ["[torch] resumed from update 47 (epoch 3, 7 of 20 updates done in it)"]


def test_a_resumed_epochs_bar_starts_at_the_resumed_position(caplog: pytest.LogCaptureFixture) -> None:
    sink = progress(caplog, resumed={"step": 47, "epoch": 3, "window": 7})
    sink.bar_shown = True
    sink.write({**STEP, "step": 48})
    assert sink.bar.n == 8 and sink.bar.total == 20
    sink.write(EPOCH)
    sink.write({**STEP, "epoch": 4, "step": 61})
    assert sink.bar.n == 1  # the next epoch starts at its beginning
    sink.close()


def test_epoch_lines_carry_the_lr_and_explain_the_star(caplog: pytest.LogCaptureFixture) -> None:
    sink = progress(caplog, monitor="val_acc")
    sink.write({**STEP, "step": 40})
    sink.write({**EPOCH, "improved": True})
    sink.write({**EPOCH, "epoch": 4, "improved": False})
    lines = caplog.messages
    assert lines[0] == "[torch] (an epoch line ending in * is a new best val_acc, the early-stopping monitor)"
    assert lines[1].endswith("- lr: 0.00123 *") and lines[2].endswith("- lr: 0.00123")
    assert sum("ending in *" in line for line in lines) == 1


def fake_run(path: Path, lrs: list[float], precision: str) -> Path:
    path.mkdir()
    config = config_from_dict({"train": {"precision": precision}}).to_dict()
    (path / "config.json").write_text(json.dumps(config))
    records = [
        {"kind": "step", "step": i + 1, "epoch": 1, "loss": 1.0 / (i + 1), "lr": lr, "grad_norm": 1.0}
        for i, lr in enumerate(lrs)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_plots_draw_values_within_resolution_as_one_line(tmp_path: Path) -> None:
    lrs = list(3e-3 * np.linspace(1.0, 0.1, 50))
    a = fake_run(tmp_path / "torch", lrs, "fp32")
    b = fake_run(tmp_path / "jax", [float(np.float32(lr)) for lr in lrs], "fp32")  # 1e-11 apart: one rounding
    drawn = plot_runs([str(a), str(b)], str(tmp_path / "runs.png"))
    assert len(drawn["lr"]) == 1 and " = " in drawn["lr"][0]
    assert len(drawn["loss"]) == 1  # identical
    c = fake_run(tmp_path / "other", [lr * 1.01 for lr in lrs], "fp32")
    assert len(plot_runs([str(a), str(c)], str(tmp_path / "apart.png"))["lr"]) == 2
    assert (tmp_path / "runs.png").stat().st_size > 10_000


def test_a_list_of_choices_error_lists_them() -> None:
    with pytest.raises(ConfigError, match=r"train.loggers must be a list of values from jsonl, tensorboard, csv"):
        config_from_dict({"train": {"loggers": "csv"}})


def test_a_missing_data_path_says_what_to_fetch_and_where_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(name="idx", path="data/fashion-mnist"))
    message = str(caught.value)
    assert str(tmp_path / "data" / "fashion-mnist") in message and "read from the current directory" in message
    assert "train-images-idx3-ubyte" in message and "fashion-mnist" in message
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz"):
        load_dataset(DataConfig(name="cifar10", path="nowhere"))


def test_a_file_that_is_not_an_npz_is_refused_in_our_words(tmp_path: Path) -> None:
    for content in (b"hello", b"\x80\x04\x95pickled"):
        (tmp_path / "bad.npz").write_bytes(content)
        with pytest.raises(DataError) as caught:
            load_dataset(DataConfig(name="npz", path=str(tmp_path / "bad.npz")))
        assert "is not an .npz archive" in str(caught.value) and "allow_pickle" not in str(caught.value)


@pytest.mark.parametrize("command,module", [("parity-compare", "paritykit.compare"), ("parity-run", "paritykit.run")])
def test_help_names_the_command_typed(command: str, module: str) -> None:
    script = Path(sys.executable).parent / command
    if not script.exists():
        pytest.skip(f"{command} is not installed in this environment (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    installed = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert installed.stdout.startswith(f"usage: {command} "), installed.stdout
    as_module = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert as_module.stdout.startswith(f"usage: python -m {module} "), as_module.stdout


@pytest.mark.parametrize("module", ["torchloop.train", "flaxloop.train", "paritykit.compare"])
def test_a_command_run_by_a_python_without_the_packages_says_which_environment(module: str) -> None:
    """The README's `python -m ...` typed before activating .venv: one line naming what is missing and
    how to get it, exit 2, no traceback (python -E -S: this interpreter without its site-packages)."""
    bare = [sys.executable, "-E", "-S"]
    ran = subprocess.run([*bare, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ran.returncode == 2 and ran.stdout == "" and ran.stderr.count("\n") == 1, ran.stderr
    assert "lacks numpy" in ran.stderr and ("make run set up" in ran.stderr or "-m pip install" in ran.stderr)
    imported = subprocess.run([*bare, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert imported.returncode == 1 and "ModuleNotFoundError" in imported.stderr  # code's imports: unchanged


def test_a_backend_command_without_its_framework_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from loopspec.backends import refuse_a_command_without

    refuse_a_command_without(("no_such_framework",), "torch")  # imported from code: nothing happens
    monkeypatch.setattr(sys, "argv", ["-m"])  # as while `python -m torchloop.train` imports its package
    with pytest.raises(SystemExit) as stopped:
        refuse_a_command_without(("numpy", "no_such_framework", "no_such_parent.child"), "torch")
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1
    assert "lacks no_such_framework, no_such_parent.child:" in said
    assert "make run set up" in said or f"{sys.executable} -m pip install -e '{ROOT}[torch]'" in said


def test_the_modules_a_command_checks_are_pyprojects_dependencies() -> None:
    import tomllib

    from loopspec.backends import CORE_MODULES

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    import_names = {"pyyaml": "yaml", "scikit-learn": "sklearn"}
    names = {re.split(r"[<>=; ]", requirement)[0].lower() for requirement in declared}
    needed = {import_names.get(n, n) for n in names if n != "tomli" or sys.version_info < (3, 11)}
    assert set(CORE_MODULES) == needed
