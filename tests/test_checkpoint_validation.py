"""A checkpoint is input: a generated corpus of damaged checkpoints, resumed on both backends and
across frameworks. Every damage is refused before anything is built or written, in one line (exit
2 from the CLI, UserError from Python); a run directory whose newest checkpoint is damaged resumes
from its newest valid one instead.

The corpus: every key of state.json removed, retyped and put out of range; every tensor dropped,
reshaped, retyped and made non-finite; plus tensors and slots that do not belong.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from loopspec import UserError, fit, load_run
from loopspec.checkpoint import CheckpointError, checkpoint_root, load_checkpoint, newest_checkpoint, save_checkpoint
from parity_tests.command_line import run_here
from parity_tests.schedule_configs import FULL
from torchloop.checkpoint import load_training_state
from torchloop.models import build_model
from torchloop.optim import make_optimizer

CONFIG = {
    "data": {"name": "intrusion", "num_samples": 400, "batch_size": 32},
    "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
    "optimizer": {"name": "adam", "lr": 0.003, "amsgrad": True},
    "schedule": {"name": "plateau", "patience": 0},
    "train": {"epochs": 2, "verbose": 0, "checkpoint": {"every_steps": 4, "keep_last": 20}},
}
BACKENDS = ("torch", "jax")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("valid")
    return {backend: fit(CONFIG, root / backend, backend=backend).out_dir for backend in BACKENDS}


def leaf_keys(value: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of state.json, sections included (the config section as one key)."""
    if isinstance(value, dict):
        for key, child in value.items():
            dotted = f"{prefix}{key}"
            yield dotted
            if key != "config":
                yield from leaf_keys(child, dotted + ".")


def edit(state: dict, key: str, change: Callable[[dict, str], None]) -> dict:
    state = copy.deepcopy(state)
    *parents, leaf = key.split(".")
    node = state
    for part in parents:
        node = node[part]
    change(node, leaf)
    return state


STATE_DAMAGES: dict[str, Callable[[dict, str], None]] = {
    "removed": lambda node, leaf: node.pop(leaf),
    "retyped": lambda node, leaf: node.__setitem__(leaf, "seven" if not isinstance(node[leaf], str) else 7),
    "out of range": lambda node, leaf: node.__setitem__(
        leaf, -3 if isinstance(node[leaf], (int, float)) and not isinstance(node[leaf], bool) else [None]
    ),
}
TENSOR_DAMAGES: dict[str, Callable[[np.ndarray], Any]] = {
    "dropped": lambda value: None,
    "reshaped": lambda value: np.concatenate([value.reshape(-1), value.reshape(-1)[:1]]),
    "retyped": lambda value: value.astype(np.int32 if value.dtype.kind == "f" else np.float32),
    "non-finite": lambda value: np.full_like(value, np.nan) if value.dtype.kind == "f" else value - 10**6,
}


def newest(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


def damaged_copy(run: Path, out: Path, state: dict | None = None, tensors: dict | None = None) -> Path:
    """The run copied with its newest checkpoint's state.json or tensors replaced."""
    shutil.copytree(run, out)
    target = newest(out)
    if state is not None:
        (target / "state.json").write_text(json.dumps(state))
    if tensors is not None:
        save_file(tensors, str(target / "tensors.safetensors"))
    return out


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def assert_refused(run: Path, backend: str) -> str:
    """Resuming the damaged checkpoint itself: one line, nothing written; the run directory resumed
    as a whole uses the newest valid checkpoint instead."""
    before = hashes(run)
    with pytest.raises(UserError) as caught:
        fit(CONFIG, run, backend=backend, resume=newest(run), overrides=["train.epochs=3"])
    message = str(caught.value)
    assert "\n" not in message and newest(run).name in message, message
    assert hashes(run) == before, "a refused resume changed the run directory"
    return message


def fits_for(backend: str, run: Path) -> Callable:
    from loopspec.config import as_config
    from loopspec.run import checkpoint_fits, plan_run

    return checkpoint_fits(plan_run(as_config(CONFIG), run, None, backend))


@pytest.mark.parametrize("damage", list(STATE_DAMAGES))
@pytest.mark.parametrize("source", BACKENDS)
def test_every_state_key_damaged_is_refused(runs: dict[str, Path], source: str, damage: str, tmp_path: Path) -> None:
    state = json.loads((newest(runs[source]) / "state.json").read_text())
    keys = list(leaf_keys(state))
    refused = 0
    keys = [key for key in keys if (key, damage) not in STILL_VALID]
    for index, key in enumerate(keys):
        damaged = edit(state, key, STATE_DAMAGES[damage])
        try:  # a damage that leaves a valid state (e.g. a null that may be null) is not a damage
            load_checkpoint_from(damaged, newest(runs[source]), tmp_path / f"probe{index}")
        except CheckpointError as err:
            assert "\n" not in str(err) and "state.json" in str(err) or "cannot read" in str(err), str(err)
            refused += 1
            continue
        pytest.fail(f"state.json {key} {damage} was accepted")
    assert refused == len(keys)


# Damages that leave a state a run could have written: checkpoints from before runs kept their
# preprocessing have none (the run refits it from its data).
STILL_VALID = {("preprocessing", "removed")}


def load_checkpoint_from(state: dict, original: Path, out: Path) -> None:
    shutil.copytree(original, out)
    (out / "state.json").write_text(json.dumps(state))
    load_checkpoint(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", BACKENDS)
def test_damaged_state_is_refused_by_fit_with_nothing_written(
    runs: dict[str, Path], source: str, backend: str, tmp_path: Path
) -> None:
    state = json.loads((newest(runs[source]) / "state.json").read_text())
    for index, (key, damage) in enumerate([("position.step", "retyped"), ("loop", "removed"), ("config", "removed")]):
        run = damaged_copy(runs[source], tmp_path / f"run{index}", edit(state, key, STATE_DAMAGES[damage]))
        message = assert_refused(run, backend)
        assert key.split(".")[-1] in message


@pytest.mark.parametrize("damage", list(TENSOR_DAMAGES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", BACKENDS)
def test_every_tensor_damaged_is_refused(
    runs: dict[str, Path], source: str, backend: str, damage: str, tmp_path: Path
) -> None:
    tensors = load_file(str(newest(runs[source]) / "tensors.safetensors"))
    fits = fits_for(backend, runs[source])
    names = sorted(tensors) if FULL or damage == "dropped" else sorted(tensors)[::3]
    for index, name in enumerate(names):
        damaged = dict(tensors)
        value = TENSOR_DAMAGES[damage](tensors[name])
        if value is None:
            del damaged[name]
        else:
            damaged[name] = np.ascontiguousarray(value)
        probe = tmp_path / f"probe{index}"
        shutil.copytree(newest(runs[source]), probe)
        save_file(damaged, str(probe / "tensors.safetensors"))
        if damage == "dropped" and name.startswith("rng."):
            fits(load_checkpoint(probe))  # a random state is optional (parity dropout needs none)
            continue
        with pytest.raises(CheckpointError) as caught:
            fits(load_checkpoint(probe))
        message = str(caught.value)  # names the tensor, or the slot of the parameter that it is
        assert "\n" not in message and (name.split(".", 1)[1] in message or "missing" in message), message
    run = damaged_copy(runs[source], tmp_path / "run", tensors={**tensors, names[-1]: tensors[names[-1]][None]})
    assert_refused(run, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slot_of_another_optimizer_or_no_parameter_is_refused(
    runs: dict[str, Path], backend: str, tmp_path: Path
) -> None:
    tensors = load_file(str(newest(runs[backend]) / "tensors.safetensors"))
    weight = next(name for name in tensors if name.startswith("model.") and name.endswith("weight"))
    for extra, match in (
        ({f"optimizer.{weight[6:]}.momentum_buffer": tensors[weight]}, "no slot of adam"),
        ({"optimizer.nothing.exp_avg": np.zeros(3, np.float32)}, "slot of no model"),
        ({"extra.tensor": np.zeros(3, np.float32)}, "not model"),
    ):
        probe = tmp_path / f"probe{len(match)}"
        shutil.copytree(newest(runs[backend]), probe)
        save_file({**tensors, **extra}, str(probe / "tensors.safetensors"))
        with pytest.raises(CheckpointError, match=match):
            fits_for(backend, runs[backend])(load_checkpoint(probe))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_valid(
    runs: dict[str, Path], backend: str, tmp_path: Path
) -> None:
    other = "jax" if backend == "torch" else "torch"
    tensors = load_file(str(newest(runs[other]) / "tensors.safetensors"))
    name = next(n for n in tensors if n.startswith("optimizer."))
    run = damaged_copy(runs[other], tmp_path / "run", tensors={**tensors, name: tensors[name][..., :1]})
    older = sorted((run / "checkpoints").glob("step-*"))[-2]
    warnings: list[str] = []
    found = newest_checkpoint(run, warnings.append, fits_for(backend, run))
    assert found.path == older and len(warnings) == 1 and newest(run).name in warnings[0]
    assert run_here(backend, "--resume", str(run), "--out", str(run), "--set", "train.epochs=3", "--quiet") == 0
    assert load_run(run).summary["epochs"] == 3


def test_when_no_checkpoint_is_valid_the_line_says_why_each_was_refused(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["torch"], run)
    for path in (run / "checkpoints").glob("step-*"):
        state = json.loads((path / "state.json").read_text())
        state["hyperparameters"]["lr"] = "fast"
        (path / "state.json").write_text(json.dumps(state))
    before = hashes(run)
    code = run_here("jax", "--resume", str(run), "--out", str(run), "--set", "train.epochs=3")
    err = capfd.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "none can continue this run" in last and "hyperparameters.lr must be a number" in last
    assert hashes(run) == before


def test_load_training_state_refuses_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    tensors = load_file(str(newest(runs["jax"]) / "tensors.safetensors"))
    name = next(n for n in tensors if n.startswith("model.") and n.endswith("weight"))
    run = damaged_copy(runs["jax"], tmp_path / "run", tensors={**tensors, name: tensors[name].T.copy()})
    run_config = load_run(run).config
    model = build_model(run_config.model, (41,), 2)
    optimizer = make_optimizer(run_config.optimizer, model.parameters())
    with pytest.raises(UserError, match="shape") as caught:
        load_training_state(newest(run), model, optimizer)
    assert "\n" not in str(caught.value)


@settings(max_examples=200 if FULL else 25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_random_damage_never_ends_in_a_traceback(runs: dict[str, Path], tmp_path: Path, data: st.DataObject) -> None:
    """hypothesis: a random key set to a random JSON value; loading gives a checkpoint or one line."""
    source = data.draw(st.sampled_from(BACKENDS))
    state = json.loads((newest(runs[source]) / "state.json").read_text())
    key = data.draw(st.sampled_from(list(leaf_keys(state))))
    junk = data.draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
            max_leaves=6,
        )
    )
    damaged = edit(state, key, lambda node, leaf: node.__setitem__(leaf, junk))
    probe = tmp_path / f"probe-{hashlib.sha256(repr((key, junk)).encode()).hexdigest()[:12]}"
    shutil.copytree(newest(runs[source]), probe)
    (probe / "state.json").write_text(json.dumps(damaged))
    try:
        checkpoint = load_checkpoint(probe)
        fits_for(source, runs[source])(checkpoint)
    except UserError as err:
        assert "\n" not in str(err)
    finally:
        shutil.rmtree(probe)


def test_a_save_over_the_same_step_killed_half_way_leaves_it_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A resumed run's first save can be of the step it resumed from: the old directory is renamed
    away before the new one takes its name, so a kill while the old one is deleted leaves the new one
    whole, and the next save clears what is left."""
    from loopspec import checkpoint

    state = {"position": {"step": 5}}
    first = save_checkpoint(tmp_path, {"w": np.zeros(3)}, state, keep_last=3, best_step=None)

    def killed(path: Any, ignore_errors: bool = False) -> None:
        if ".old-" in str(path) and not ignore_errors:
            raise KeyboardInterrupt  # the process dies while deleting the old copy
        real_rmtree(path, ignore_errors=ignore_errors)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {"w": np.ones(3)}, state, keep_last=3, best_step=None)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_file(str(first / "tensors.safetensors"))["w"], np.ones(3))
    assert [p.name for p in checkpoint_root(tmp_path).glob(".step-*")] == [f".{first.name}.old-{os.getpid()}"]
    monkeypatch.setattr(checkpoint.os, "getpid", lambda: os.getppid())  # the next save, by another process
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"position": {"step": 6}}, keep_last=3, best_step=None)
    assert not list(checkpoint_root(tmp_path).glob(".step-*"))


def test_a_prune_killed_half_way_leaves_no_checkpoint_that_looks_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """keep_last deletes old checkpoints: renamed out of the step-* names first, so a kill while one is
    deleted leaves no directory with its marker and a file gone (as an in-place delete did)."""
    from loopspec import checkpoint

    save_checkpoint(tmp_path, {"w": np.zeros(3)}, {"position": {"step": 1}}, keep_last=1, best_step=None)

    def killed(path: Any, ignore_errors: bool = False) -> None:
        if ".old-" in str(path) and Path(path).exists():
            (Path(path) / "state.json").unlink()  # part of it deleted, then the process dies
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {"w": np.ones(3)}, {"position": {"step": 2}}, keep_last=1, best_step=None)
    monkeypatch.undo()
    assert [path.name for path in checkpoint_root(tmp_path).glob("step-*")] == ["step-00000002"]
    kept = checkpoint_root(tmp_path) / "step-00000002"
    assert (kept / "state.json").exists() and load_file(str(kept / "tensors.safetensors"))["w"].tolist() == [1, 1, 1]
    save_checkpoint(tmp_path, {"w": np.ones(3)}, {"position": {"step": 3}}, keep_last=1, best_step=None)
    assert not list(checkpoint_root(tmp_path).glob(".step-*"))  # the next save clears what was left
