"""The compare tool finds a disagreement where there is one, and says where it starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import paritykit.compare
from loopspec.comparison import compare_runs
from loopspec.weights import load_weights, save_weights
from parity_tests.command_line import MODULES, run_here
from parity_tests.matrix import parity_config
from paritykit.harness import run_backends

BACKEND_OF = {module: backend for backend, module in MODULES.items()}


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory) -> Path:
    return run_backends(
        parity_config("cnn", "adam", "cross_entropy", steps=60), tmp_path_factory.mktemp("compare"), backends=("torch",)
    )["torch"]


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def rewrite_step(run: Path, step: int, key: str, factor: float) -> None:
    path = run / "metrics.jsonl"
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "step" and record["step"] == step:
            record[key] *= factor
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def test_a_run_agrees_with_itself(torch_run: Path) -> None:
    report = compare_runs(torch_run, torch_run)
    assert report.agree and all(row.max_rel == 0 for row in report.rows)


def test_a_perturbed_step_is_found(torch_run: Path, tmp_path: Path) -> None:
    other = copy_run(torch_run, tmp_path / "b")
    rewrite_step(other, 17, "loss", 1 + 1e-8)
    report = compare_runs(torch_run, other, rtol=1e-10)
    row = next(r for r in report.rows if r.quantity == "step loss")
    assert not report.agree and row.first_over == 17
    assert row.max_rel == pytest.approx(1e-8, rel=1e-3)
    assert compare_runs(torch_run, other, rtol=1e-7).agree
    assert compare_runs(torch_run, other, rtol=1e-10, steps=16).agree  # before the perturbation


def test_a_perturbed_tensor_is_found(torch_run: Path, tmp_path: Path) -> None:
    other = copy_run(torch_run, tmp_path / "b")
    weights = load_weights(other / "final.safetensors")
    weights["classifier.weight"] = weights["classifier.weight"] * (1 + 1e-6)
    save_weights(other / "final.safetensors", weights)
    report = compare_runs(torch_run, other)
    bad = [r.quantity for r in report.rows if not r.ok(report.rtol)]
    assert bad == ["final classifier.weight"]


def test_a_changed_buffer_count_is_found(torch_run: Path, tmp_path: Path) -> None:
    other = copy_run(torch_run, tmp_path / "b")
    weights = load_weights(other / "final.safetensors")
    weights["features.0.norm.num_batches_tracked"] = weights["features.0.norm.num_batches_tracked"] + 1
    save_weights(other / "final.safetensors", weights)
    assert not compare_runs(torch_run, other).agree


def test_missing_steps_are_a_disagreement(torch_run: Path, tmp_path: Path) -> None:
    other = copy_run(torch_run, tmp_path / "b")
    lines = (other / "metrics.jsonl").read_text().splitlines()
    (other / "metrics.jsonl").write_text(
        "\n".join(line for line in lines if '"step": 60,' not in line or '"kind": "step"' not in line) + "\n"
    )
    report = compare_runs(torch_run, other)
    assert not report.agree and any("step counts differ" in p for p in report.problems)


def test_command_line_exit_codes(torch_run: Path, tmp_path: Path) -> None:
    other = copy_run(torch_run, tmp_path / "b")
    rewrite_step(other, 3, "grad_norm", 1.01)
    command = [sys.executable, "-m", "loopspec.comparison"]
    same = subprocess.run(command + [str(torch_run), str(torch_run)], capture_output=True, text=True)
    assert same.returncode == 0 and "AGREE" in same.stdout
    differ = subprocess.run(command + [str(torch_run), str(other)], capture_output=True, text=True)
    assert differ.returncode == 1 and "step 3" in differ.stdout and "DISAGREE" in differ.stdout
    missing = subprocess.run(command + [str(torch_run), str(tmp_path / "nothing")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "not a run directory" in missing.stderr


def test_tensor_difference_is_judged_at_the_tensor_scale() -> None:
    from loopspec.comparison import tensor_relative_difference

    a = np.array([1.0, 1e-12])
    b = np.array([1.0, 2e-12])  # 100% apart elementwise, 1e-12 at the tensor's scale
    assert tensor_relative_difference(a, b) == pytest.approx(1e-12)
    shrunk_a, shrunk_b, init = np.array([1e-13]), np.array([2e-13]), np.array([0.1])
    assert tensor_relative_difference(shrunk_a, shrunk_b) == pytest.approx(0.5)
    assert tensor_relative_difference(shrunk_a, shrunk_b, init) == pytest.approx(1e-12)


# ------------------------------------------------------------------ what kind of difference compare sees
def readme_cli_example() -> list[list[str]]:
    readme = Path("README.md").read_text()
    section = readme[readme.index("## One backend, then the other") :]
    block = section[section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)]
    return [line.split("#")[0].split() for line in block.strip().splitlines()]


def test_the_readme_cli_example_compares_two_runs_that_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The README's three commands (one epoch, to keep the suite short), run in this process (each
    module's main; a subprocess would import the frameworks again): the two runs agree."""
    configs, commands = str(Path.cwd() / "configs") + "/", readme_cli_example()
    monkeypatch.chdir(tmp_path)
    for command in commands:
        assert command[:2] == ["python", "-m"] and command[2] in (*BACKEND_OF, "paritykit.compare")
        args = [a.replace("configs/", configs) for a in command[3:]]
        if command[2] == "paritykit.compare":
            code = paritykit.compare.main(args)
        else:
            code = run_here(BACKEND_OF[command[2]], *args, "--set=train.epochs=1")
        shown = capsys.readouterr()
        assert code == 0, shown.out[-2000:] + shown.err
    assert "AGREE" in shown.out.splitlines()[-1] and "(torch, fp64" in shown.out


def test_runs_of_different_configs_are_named_key_by_key(tmp_path: Path) -> None:
    base = parity_config("mlp", "adam", "focal", steps=5)
    other = json.loads(json.dumps(base))
    other["optimizer"]["lr"] = 3e-4
    other["model"]["hidden"] = [32, 24]
    a = run_backends(base, tmp_path / "a", backends=("torch",))["torch"]
    b = run_backends(other, tmp_path / "b", backends=("jax",))["jax"]
    report = compare_runs(a, b)
    text = report.render()
    assert not report.agree and "the configs differ in 2 key(s)" in text
    assert "optimizer.lr" in text and "model.hidden" in text and "inf" not in text
    assert "differ in shape" in " ".join(report.problems)
    assert text.index("the configs differ") < text.index("quantity")


def test_float32_runs_are_judged_by_the_envelope(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """parity-compare's main in this process (the installed command runs as one in tests/test_wheel.py)."""
    raw = parity_config("cnn", "adam", "cross_entropy", steps=40)
    raw["train"]["precision"] = "fp32"
    runs = run_backends(raw, tmp_path)
    code = paritykit.compare.main([str(runs["torch"]), str(runs["jax"])])
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert "1e-10 is the float64 tolerance" in shown and "AGREE: lr" in shown
    assert "(torch, fp32, 40 updates)" in shown


def test_float32_runs_from_different_weights_are_not_judged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = parity_config("mlp", "adam", "focal", steps=10)
    raw["train"]["precision"] = "fp32"
    a = run_backends(raw, tmp_path / "a", backends=("torch",))["torch"]
    raw["model"]["init"] = "framework"
    b = run_backends(raw, tmp_path / "b", backends=("jax",))["jax"]
    raw["model"]["init"] = "canonical"
    report_dir = tmp_path / "b"
    (report_dir / "jax" / "config.json").write_text(json.dumps(json.loads((a / "config.json").read_text())))
    code = paritykit.compare.main([str(a), str(b)])
    shown = capsys.readouterr()
    assert code == 2 and "started from different weights" in shown.out, shown.out + shown.err
