"""A run directory is written only by its own run, and its preprocessing travels with it.

Every way into a directory is tried (fresh, --resume from another run, --resume auto, an older
checkpoint of its own): what is refused is refused with one line (exit 2 from the CLI, UserError
from Python) and every file of the directory is unchanged, hash for hash. New raw rows get the
run's preprocessing: their predictions score the run's validation accuracy, on both backends and
after load_run across backends.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import loopspec.backends
import paritykit.run
from loopspec import UserError, fit, load_run
from loopspec.data import make_intrusion, raw_split, split_indices
from loopspec.metrics import predictions
from loopspec.preprocessing import load_preprocessing
from parity_tests.command_line import refusal

TINY = {
    "data": {"name": "intrusion", "num_samples": 600, "batch_size": 32},
    "model": {"name": "mlp", "hidden": [16, 8], "dropout": 0.0},
    "train": {"epochs": 2, "verbose": 0, "checkpoint": {"every_steps": 5, "keep_last": 10}},
}
DIGITS = {
    "data": {"name": "digits", "batch_size": 64, "drop_last": True},  # one compiled step
    "model": {"name": "cnn", "channels": [4, 8, 8]},
    "train": {"epochs": 1, "verbose": 0},
}


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished runs of different configs, each with checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    fit(TINY, root / "a", backend="torch")
    fit(DIGITS, root / "b", backend="torch", overrides=["train.checkpoint.every_steps=7"])
    return {"a": root / "a", "b": root / "b"}


def partial_copies(runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Directories holding only logs, only checkpoints, a partial run, and another whole run."""
    made = {}
    made["only logs"] = tmp_path / "logs"
    made["only logs"].mkdir()
    shutil.copy(runs["a"] / "metrics.jsonl", made["only logs"])
    made["only checkpoints"] = tmp_path / "checkpoints"
    shutil.copytree(runs["a"] / "checkpoints", made["only checkpoints"] / "checkpoints")
    made["a partial run"] = tmp_path / "partial"
    made["a partial run"].mkdir()
    for name in ("config.json", "run.json", "init.safetensors"):
        shutil.copy(runs["a"] / name, made["a partial run"])
    made["another run"] = tmp_path / "another"
    shutil.copytree(runs["a"], made["another run"])
    return made


def refused(action, directory: Path, match: str) -> None:
    before = tree_hashes(directory)
    with pytest.raises(UserError, match=match) as caught:
        action()
    assert "\n" not in str(caught.value)
    assert tree_hashes(directory) == before, "a refused run touched the directory"


@pytest.mark.parametrize("kind", ["only logs", "only checkpoints", "a partial run", "another run"])
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_resume_into_a_directory_of_another_run_is_refused(
    runs: dict[str, Path], kind: str, backend: str, tmp_path: Path
) -> None:
    target = partial_copies(runs, tmp_path)[kind]
    refused(
        lambda: fit(DIGITS, target, backend=backend, resume=runs["b"], overrides=["train.epochs=2"]),
        target,
        "holds another run",
    )


@pytest.mark.parametrize("kind", ["only logs", "only checkpoints", "a partial run", "another run"])
def test_a_fresh_run_into_a_used_directory_is_refused(runs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    target = partial_copies(runs, tmp_path)[kind]
    refused(lambda: fit(DIGITS, target, backend="torch"), target, "holds another run")


def test_resume_auto_does_not_replace_another_config(runs: dict[str, Path], tmp_path: Path) -> None:
    target = partial_copies(runs, tmp_path)["a partial run"]  # TINY's config, no checkpoint yet
    refused(lambda: fit(DIGITS, target, backend="jax", resume="auto"), target, "holds another run")
    fit(TINY, target, backend="jax", resume="auto")  # the same config: a start that never saved, restarted
    assert (target / "final.safetensors").exists()


def test_resume_from_an_older_checkpoint_of_its_own_is_refused_unless_overwrite(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "a"
    shutil.copytree(runs["a"], run)
    oldest = sorted((run / "checkpoints").glob("step-*"))[0]
    more = ["train.epochs=3"]
    refused(lambda: fit(TINY, run, backend="torch", resume=oldest, overrides=more), run, "checkpoints newer than")
    fit(TINY, run, backend="torch", resume=oldest, overrides=more, overwrite=True)
    names = [path.name for path in sorted((run / "checkpoints").glob("step-*"))]
    steps = [record["step"] for record in load_run(run).history["step"]]
    assert steps == list(range(1, len(steps) + 1)), "each update recorded once"
    assert names[0] == oldest.name and len(names) > 1


def test_resume_into_an_empty_directory_or_its_own_continues(runs: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "b"
    shutil.copytree(runs["b"], source)
    fit(DIGITS, tmp_path / "elsewhere", backend="jax", resume=source, overrides=["train.epochs=2"])
    fit(DIGITS, source, backend="torch", resume=source, overrides=["train.epochs=2"])
    for run in (tmp_path / "elsewhere", source):
        assert load_run(run).summary["epochs"] == 2


def test_overwrite_replaces_another_run_when_resuming(runs: dict[str, Path], tmp_path: Path) -> None:
    target = partial_copies(runs, tmp_path)["another run"]
    fit(DIGITS, target, backend="torch", resume=runs["b"], overrides=["train.epochs=2"], overwrite=True)
    assert load_run(target).config.data.name == "digits"
    assert sorted(p.name for p in (target / "checkpoints").glob("step-*"))[0] >= "step-00000007"


def test_the_cli_refuses_in_one_line_with_exit_2(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    target = partial_copies(runs, tmp_path)["another run"]
    before = tree_hashes(target)
    line = refusal(capfd, "torch", "--resume", str(runs["b"]), "--out", str(target), "--set", "train.epochs=2")
    assert "holds another run" in line and tree_hashes(target) == before


def test_parity_run_refuses_a_directory_it_did_not_write(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    target = partial_copies(runs, tmp_path)["another run"]
    before = tree_hashes(target)
    code = paritykit.run.main(["--out", str(target), "--dtype", "float64"])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert tree_hashes(target) == before


# ------------------------------------------------------------------ preprocessing travels with the run


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_raw_intrusion_rows_score_the_validation_accuracy(runs: dict[str, Path], backend: str) -> None:
    run = load_run(runs["a"], backend=backend)  # trained by torch: the jax model too, across backends
    raw_val, labels = raw_split(run.config.data)
    assert not np.allclose(raw_val, run.dataset().x_val), "raw rows differ from the model's inputs"
    assert run.evaluate(raw_val, labels)["val_acc"] == run.summary["val_acc"]
    unprepared = run.predict(raw_val, preprocessed=True)  # the mistake the saved preprocessing prevents
    assert not np.array_equal(predictions(unprepared), predictions(run.predict(raw_val)))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_raw_csv_rows_score_the_validation_accuracy(backend: str, tmp_path: Path) -> None:
    x, y = make_intrusion(700, seed=3)
    x = x[:, :12] * np.array([1.0, 3.0, 100.0, 1e3, 1e4, 1e5, 0.01, 5.0, 7.0, 1.0, 2.0, 50.0])  # unscaled columns
    header = ",".join([f"f{i}" for i in range(12)] + ["label"])
    np.savetxt(tmp_path / "table.csv", np.column_stack([x, y]), delimiter=",", header=header, comments="")
    config = {
        "data": {"name": "csv", "path": str(tmp_path / "table.csv"), "label_column": "label", "batch_size": 32},
        "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
        "loss": {"name": "cross_entropy"},
        "train": {"epochs": 3, "verbose": 0},
    }
    trained = fit(config, tmp_path / "run", backend=backend)
    table = np.loadtxt(tmp_path / "table.csv", delimiter=",", skiprows=1)  # the file's own rows, raw
    _, val = split_indices(len(table), trained.config.data.val_fraction, trained.config.data.seed)
    raw_rows, labels = table[val, :12], table[val, 12].astype(int)
    other = "jax" if backend == "torch" else "torch"
    for run in (trained, load_run(tmp_path / "run"), load_run(tmp_path / "run", backend=other)):
        assert run.evaluate(raw_rows, labels)["val_acc"] == trained.summary["val_acc"], run.backend
    saved = load_preprocessing(tmp_path / "run")
    np.testing.assert_array_equal(saved.apply(raw_rows), trained.dataset().x_val)


def test_checkpoints_carry_the_preprocessing(runs: dict[str, Path]) -> None:
    from loopspec.checkpoint import newest_checkpoint

    checkpoint = newest_checkpoint(runs["a"])
    assert checkpoint.state["preprocessing"] == load_preprocessing(runs["a"]).to_dict()
    assert load_preprocessing(runs["b"]).divisor == 16.0  # digits: pixel counts 0-16


def test_raw_inputs_of_the_wrong_width_are_refused_in_one_line(runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"do not fit this run's standardisation of 41 features"):
        load_run(runs["a"]).predict(np.zeros((3, 40)))


def test_parity_run_without_a_framework_says_so_before_training(
    tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parity-run trains torch, then JAX: an interpreter without JAX is told first, not after the torch run."""
    monkeypatch.setattr(loopspec.backends, "importable", lambda name: name not in ("jax", "jaxlib"))
    code = paritykit.run.main(["--out", str(tmp_path / "runs"), "--dtype", "float64"])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lacks jax, jaxlib:" in err, err
    assert not (tmp_path / "runs").exists()
