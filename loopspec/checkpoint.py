"""Checkpoints: the complete training state in one directory per optimizer step, the same layout
for both backends, so a run resumes exactly on either one.

    checkpoints/step-00000120/
        tensors.safetensors   model.* weights and BatchNorm buffers (torch state_dict names and
                              layouts), optimizer.<param>.<slot> (torch's slot names: exp_avg,
                              exp_avg_sq, max_exp_avg_sq, momentum_buffer, square_avg, grad_avg,
                              sum), rng.* (framework random state)
        state.json            format, backend, the resolved config, the run's position (epoch,
                              windows done in it, applied updates, forward passes, metrics lines),
                              optimizer counters and hyperparameters, schedule, loss scale,
                              early stopping and the run's counters
        COMPLETE              written last: a directory without it is not a checkpoint
    checkpoints/last, checkpoints/best   the newest and the best checkpoint's directory name

No pickle is involved: tensors go through safetensors, the rest through JSON. A checkpoint is
written to a temporary directory, every file synced, the marker written, then renamed into
place, so a crash or kill during a save leaves the previous checkpoints as they were. (Orbax's
CheckpointManager does the same for JAX pytrees; a layout that torch writes and reads too, with
torch's names, is what cross-framework resume needs, so it is written here for both.)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from loopspec.checkpoint_checks import CheckpointError, check_state, check_tensors
from loopspec.config import resolved_config
from loopspec.errors import UserError
from loopspec.weights import read_with_bfloat16

FORMAT = 1
MARKER = "COMPLETE"


@dataclass
class Checkpoint:
    path: Path
    tensors: dict[str, np.ndarray]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["position"]["step"])

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        """The tensors under `prefix.` with the prefix removed (model., optimizer., rng.)."""
        return {name[len(prefix) + 1 :]: value for name, value in self.tensors.items() if name.startswith(prefix + ".")}


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path, tensors: dict[str, np.ndarray], state: dict[str, Any], keep_last: int, best_step: Optional[int]
) -> Path:
    """Write one checkpoint atomically; point `last` at it; keep the newest `keep_last` and the best."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(state["position"]["step"])
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(
        {name: np.array(value, order="C") for name, value in tensors.items()}, str(tmp / "tensors.safetensors")
    )  # keeps 0-d
    (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **state}, indent=1))
    for name in ("tensors.safetensors", "state.json"):
        _fsync(tmp / name)
    (tmp / MARKER).write_text("")
    _fsync(tmp / MARKER)
    _fsync(tmp)
    if final.exists():  # the same step saved again (a resumed run's first save): a kill leaves one whole
        old = _set_aside(root, final)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync(root)
    _point(root, "last", final.name)
    if best_step is not None and (root / step_name(best_step)).exists():
        _point(root, "best", step_name(best_step))
    _prune(root, keep_last, best_step)
    return final


def _point(root: Path, name: str, target: str) -> None:
    tmp = root / f".{name}.tmp"
    tmp.write_text(target + "\n")
    os.replace(tmp, root / name)


def _set_aside(root: Path, checkpoint: Path) -> Path:
    """Rename a checkpoint out of the step-* names before it is deleted: deleted in place, a kill half-way
    left a directory with its marker and a file gone. The next prune clears what a kill leaves here."""
    old = root / f".{checkpoint.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(checkpoint, old)
    return old


def _prune(root: Path, keep_last: int, best_step: Optional[int]) -> None:
    steps = sorted(p for p in root.glob("step-*") if (p / MARKER).exists())
    keep = {p.name for p in steps[-keep_last:]} | ({step_name(best_step)} if best_step is not None else set())
    for path in steps:
        if path.name not in keep:
            shutil.rmtree(_set_aside(root, path), ignore_errors=True)
    for stale in root.glob(".step-*.old-*"):  # a deletion killed half-way, by this or an earlier process
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".step-*.tmp-*"):  # a save killed half-way, by an earlier process
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def hyperparameter_state(
    lr: float, momentum: Optional[float], plateau: Any = None, loss_scale: Optional[tuple[float, int]] = None
) -> dict[str, Any]:
    """The JSON half of a backend's training state, the same keys from both: the learning rate and
    momentum the next update uses, a plateau scheduler's counters (an object with torch's attribute
    names: best, num_bad_epochs, cooldown_counter) and the fp16 loss scale (scale, growth tracker)."""
    state: dict[str, Any] = {
        "hyperparameters": {"lr": float(lr), "momentum": None if momentum is None else float(momentum)}
    }
    if plateau is not None:
        state["plateau"] = {key: getattr(plateau, key) for key in ("best", "num_bad_epochs", "cooldown_counter")}
    if loss_scale is not None:
        state["loss_scale"] = {"scale": float(loss_scale[0]), "growth_tracker": int(loss_scale[1])}
    return state


MAX_STATE_BYTES = 64 << 20  # a state.json is a few kB; far larger is not one


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint directory and check it (loopspec.checkpoint_checks): a missing marker, an
    unreadable file, a state.json off its schema or a tensor that cannot be state is a CheckpointError."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        if (path / "state.json").stat().st_size > MAX_STATE_BYTES:
            raise ValueError(f"state.json is over {MAX_STATE_BYTES >> 20} MiB")
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else err
        raise CheckpointError(f"cannot read checkpoint {path}: state.json: {reason}") from None
    try:
        tensors = load_file(str(path / "tensors.safetensors"))
    except TypeError:  # a dtype NumPy lacks: bfloat16
        try:
            tensors = read_with_bfloat16(path / "tensors.safetensors")
        except UserError as err:
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: tensors.safetensors: {err}") from None
    check_state(state, str(path), FORMAT)
    check_tensors(tensors, str(path))
    return Checkpoint(path, tensors, state)


Fits = Callable[[Checkpoint], None]  # raises CheckpointError when a checkpoint cannot continue this run


def newest_checkpoint(run_dir: Path, warn: Any = print, fits: Optional[Fits] = None) -> Optional[Checkpoint]:
    """The newest checkpoint of a run that loads, passes its checks and `fits`; each newer one that
    does not is reported and skipped. None when the run has no checkpoint; a CheckpointError naming
    every refusal when it has some and none can be used."""
    refusals = []
    for path in sorted(checkpoint_root(run_dir).glob("step-*"), reverse=True):
        try:
            checkpoint = load_checkpoint(path)
            if fits is not None:
                fits(checkpoint)
            return checkpoint
        except CheckpointError as err:
            warn(f"skipping checkpoint {path.name}: {err}")
            refusals.append(f"{path.name}: {str(err).replace(f'checkpoint {path}', '').strip(': ')}")
    if refusals:
        raise CheckpointError(
            f"{checkpoint_root(run_dir)} holds {len(refusals)} checkpoint(s) and none can continue this run: "
            + "; ".join(refusals[:3])
            + (f"; and {len(refusals) - 3} more" if len(refusals) > 3 else "")
        )
    return None


def resolve_resume(
    target: str | Path, run_dir: Path, fits: Optional[Fits] = None, warn: Any = print
) -> Optional[Checkpoint]:
    """`--resume`: a checkpoint directory, a run directory (its newest usable checkpoint), or `auto`
    (the run directory's newest usable checkpoint if it has one, else a fresh start)."""
    if str(target) == "auto":
        return newest_checkpoint(run_dir, warn, fits)
    target = Path(target)
    if (target / MARKER).exists() or (target / "state.json").exists():
        checkpoint = load_checkpoint(target)
        if fits is not None:
            fits(checkpoint)
        return checkpoint
    found = newest_checkpoint(target, warn, fits)
    if found is None:
        what = "does not exist" if not target.exists() else "holds no checkpoint"
        raise CheckpointError(
            f"--resume {target}: {what} (a checkpoint directory or a run directory with checkpoints/ is expected)"
        )
    return found


# Keys a resumed run may change: how long it trains, how it logs and saves, where it runs.
RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.max_steps",
    "train.log_every",
    "train.verbose",
    "train.loggers",
    "train.checkpoint.",
    "train.device",
)


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict[str, Any], config: Any) -> list[str]:
    """The keys where a saved config differs from `config`, other than what a resumed run may change."""
    saved, given = flat_config(saved), flat_config(resolved_config(config))
    return [
        key
        for key in sorted(set(saved) | set(given))
        if saved.get(key) != given.get(key) and not key.startswith(RESUME_MAY_CHANGE)
    ]


def restarts_same_run(run_dir: Path, config: Any) -> bool:
    """`--resume auto` with no checkpoint yet: the directory is empty, or holds a start of this same
    config (a job preempted before its first save), which a fresh start may replace."""
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        return False
    try:
        return not config_differences(json.loads(saved.read_text()), config)
    except (OSError, ValueError):
        return False


def check_resumable(checkpoint: Checkpoint, config: Any) -> None:
    """A checkpoint continues the same run: the configs may differ only in RESUME_MAY_CHANGE."""
    saved, given = flat_config(checkpoint.state["config"]), flat_config(resolved_config(config))
    differing = config_differences(checkpoint.state["config"], config)
    if differing:
        shown = ", ".join(
            f"{key} {saved.get(key)!r} in the checkpoint, {given.get(key)!r} now" for key in differing[:3]
        )
        more = f" (and {len(differing) - 3} more)" if len(differing) > 3 else ""
        raise CheckpointError(
            f"checkpoint {checkpoint.path} is of another run: {shown}{more}; resume with the "
            "checkpoint's config (omit --config) or start a new run"
        )
