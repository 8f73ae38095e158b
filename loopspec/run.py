"""What a run needs before training, framework-neutral: the data checked against the model
and loss, the initial weights, the schedule plan and the run directory with its config.json."""

from __future__ import annotations

import fcntl
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import numpy as np

from loopspec.backends import backend_module
from loopspec.batching import batches_per_epoch
from loopspec.checkpoint import load_checkpoint
from loopspec.checkpoint_checks import BUFFER_SUFFIXES, check_fits
from loopspec.checks import check_data_and_config
from loopspec.config import Config, resolved_config
from loopspec.data import Dataset, load_dataset
from loopspec.dropout import DropoutLayer, check_layout
from loopspec.errors import UserError
from loopspec.files import write_json_atomic
from loopspec.memory import check_generated_data
from loopspec.models import model_entry, output_dim
from loopspec.parallel import Placement
from loopspec.preprocessing import save_preprocessing
from loopspec.schedules import SchedulePlan, plan_schedule, schedule_horizon
from loopspec.sinks import check_loggers
from loopspec.weights import canonical_init, check_weights, load_weights


@dataclass
class RunSetup:
    config: Config
    dataset: Dataset
    out_dir: Path
    backend: str
    out_dim: int
    weight_shapes: dict[str, tuple[int, ...]]  # the model's own tensors under torch's state_dict names
    initial_weights: Optional[dict[str, np.ndarray]]  # canonical layout; None: the model's own init
    plan: SchedulePlan
    schedule_horizon: int  # intervals the schedule's shape spans: T_max (cosine) or total_steps
    lock: Optional[TextIO] = None  # held while the run writes its directory
    placement: Placement = field(default_factory=Placement)  # this process's replica; only rank 0 writes
    models: dict[str, Any] = field(default_factory=dict)  # backend -> a module passed to fit(model=...)
    losses: dict[str, Any] = field(default_factory=dict)  # backend -> (logits, labels) -> mean, from fit(loss=...)
    # The model's parity dropout layers in the order a forward pass runs them: (name, one sample's
    # shape, rate). The backend finds them when it builds the model; masks are keyed by that order.
    dropout_layers: list[DropoutLayer] = field(default_factory=list)
    # paritykit.locate: stop after this update with a checkpoint there (loopspec.errors.Paused); not a
    # config key, so the schedule, whose length max_steps would change, stays the run's.
    pause_after: Optional[int] = None
    # paritykit.sensitivity's envelope: each micro-batch's rows (and their dropout masks) in reverse
    # order, so every reduction over the batch sums in another order, as another correct kernel would.
    reverse_batch_rows: bool = False

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()

    @property
    def cycles_momentum(self) -> bool:
        return self.config.schedule.name == "onecycle" and self.config.schedule.cycle_momentum

    @property
    def parity_dropout_asked(self) -> bool:
        return self.config.model.dropout_mode == "parity"

    @property
    def parity_dropout(self) -> bool:
        return self.parity_dropout_asked and any(rate > 0 for _, _, rate in self.dropout_layers)

    @property
    def clipping(self) -> bool:
        return self.config.train.clip_grad_norm is not None or self.config.train.clip_grad_value is not None

    @property
    def parity_dropout_layers(self) -> list[DropoutLayer]:
        """The layers that take parity masks, in running order (a mask's layer index is its place here):
        those with a nonzero rate, a rate-0 layer being the identity; none in framework mode."""
        layers = [layer for layer in self.dropout_layers if layer[2] > 0] if self.parity_dropout else []
        check_layout(layers, self.config.data.batch_size)
        return layers


WeightShapes = Callable[..., dict[str, tuple[int, ...]]]  # (config, input_shape, out_dim, model, reference)


def prepare_run(
    config: Config,
    out_dir: str | Path,
    init: Any,
    backend: str,
    resumed_from: Optional[Path] = None,
    overwrite: bool = False,
    placement: Optional[Placement] = None,
) -> RunSetup:
    """plan_run, then claim_run: everything checked, then the run directory claimed and written."""
    setup = plan_run(config, out_dir, init, backend, placement)
    claim_run(setup, resumed_from, overwrite)
    return setup


def plan_run(
    config: Config,
    out_dir: str | Path,
    init: Any,
    backend: str,
    placement: Optional[Placement] = None,
    models: Optional[dict[str, Any]] = None,
    dataset: Optional[Dataset] = None,
) -> RunSetup:
    """Load data (or take `dataset`, arrays passed to fit), read the model's tensors from the backend's
    own module (`models`: modules passed to fit), check everything against the data, resolve initial
    weights (`init`: a safetensors path, a dict of arrays under torch names, or a Run), plan the
    schedule; nothing is written."""
    check_generated_data(config)
    check_loggers(config.train.loggers)
    dataset = dataset if dataset is not None else load_dataset(config.data)
    check_data_and_config(config, dataset, None)
    plan = plan_schedule(config, len(dataset.y_train))
    out_dim = output_dim(config.loss.name, dataset.num_classes)
    models = models or {}
    given = initial_tensors(init)
    reference = None if given is None else {name: tuple(value.shape) for name, value in given.items()}
    weight_shapes: WeightShapes = backend_module(backend, "models").weight_shapes
    integer_inputs = bool(np.issubdtype(dataset.x_train.dtype, np.integer))
    names_from = None if model_entry(config.model).builtin else reference  # a custom pair's names come from torch
    shapes = weight_shapes(config.model, dataset.input_shape, out_dim, models.get(backend), names_from, integer_inputs)
    placement = placement or Placement()
    check_data_and_config(config, dataset, shapes, placement.replicas)
    if given is not None:
        check_weights(given, shapes, init_source(init))
        initial: Optional[dict[str, np.ndarray]] = given
    elif model_entry(config.model).builtin and config.model.init == "canonical":
        own_init = model_entry(config.model).init
        initial = own_init(config.model, shapes, config.seed) if own_init else canonical_init(shapes, config.seed)
    elif backend == "jax" and not model_entry(config.model).builtin:
        raise UserError(
            "a custom model on JAX starts from given weights under torch's names: pass --init W.safetensors or "
            "fit(init=...) (the torch run's init.safetensors, its module's state_dict, or its Run)"
        )
    else:
        initial = None
    horizon = schedule_horizon(config, plan)
    setup = RunSetup(config, dataset, Path(out_dir), backend, out_dim, shapes, initial, plan, horizon, None, placement)
    setup.models = models
    return setup


def initial_tensors(init: Any) -> Optional[dict[str, np.ndarray]]:
    """Initial weights under torch's names from a safetensors path, a dict of arrays (a state_dict's
    values may be tensors), or a run (its init.safetensors)."""
    if init is None:
        return None
    if isinstance(init, (str, Path)):
        return load_weights(init)
    if hasattr(init, "out_dir"):  # a loopspec.results.Run
        return load_weights(Path(init.out_dir) / "init.safetensors")
    if isinstance(init, dict):
        tensors = {}
        for name, value in init.items():
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            tensors[str(name)] = np.asarray(value)
        return tensors
    raise UserError(f"init must be a safetensors path, a dict of arrays or a Run, got {type(init).__name__}")


def init_source(init: Any) -> str:
    return str(init) if isinstance(init, (str, Path)) else "the initial weights"


def claim_run(setup: RunSetup, resumed_from: Optional[Path], overwrite: bool) -> None:
    """Claim the run directory (refusing another run's unless continuing it from `resumed_from`, a
    checkpoint, or told to overwrite it) and write config.json, run.json and preprocessing.json."""
    if not setup.placement.writes:
        return
    out_dir, dataset = setup.out_dir, setup.dataset
    setup.lock = claim_run_directory(out_dir, resumed_from, overwrite)
    write_json_atomic(out_dir / "config.json", resolved_config(setup.config))
    # What rebuilding the model needs without reloading the data (loopspec.results.load_run).
    facts = {
        "backend": setup.backend,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "integer_inputs": bool(np.issubdtype(dataset.x_train.dtype, np.integer)),  # token ids
    }
    write_json_atomic(out_dir / "run.json", facts)
    save_preprocessing(out_dir, dataset.preprocessing)


def checkpoint_fits(setup: RunSetup) -> Callable[[Any], None]:
    """What a checkpoint must satisfy to continue this run (loopspec.checkpoint_checks.check_fits)."""
    config, data = setup.config, setup.config.data
    batches = batches_per_epoch(len(setup.dataset.y_train), data.batch_size, data.drop_last)
    parameters = [name for name in setup.weight_shapes if not name.endswith(BUFFER_SUFFIXES)]
    return lambda checkpoint: check_fits(
        checkpoint, config, setup.weight_shapes, parameters, setup.plan.updates_per_epoch, batches
    )


RUN_FILES = (
    "config.json",
    "run.json",
    "metrics.jsonl",
    "metrics_steps.csv",
    "metrics_epochs.csv",
    "tensorboard",
    "init.safetensors",
    "final.safetensors",
    "best.safetensors",
    "preprocessing.json",
)


def claim_run_directory(out_dir: Path, resumed_from: Optional[Path], overwrite: bool) -> TextIO:
    """Lock the run directory for this process. Only its own run writes there: a fresh run needs an
    empty directory; a resumed one its checkpoint's own run directory (from its newest checkpoint) or
    an empty one. Anything else is refused with one line, nothing touched, unless `overwrite`, which
    removes the other run's files (resuming from an older checkpoint of its own: the newer ones)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a directory; choose another run directory")
    held = [name for name in (*RUN_FILES, "checkpoints") if (out_dir / name).exists()]
    own = resumed_from is not None and Path(resumed_from).resolve().parent.parent == out_dir.resolve()
    newer = newer_checkpoints(out_dir, Path(resumed_from)) if own and resumed_from is not None else []
    if not overwrite:
        refuse_foreign_directory(out_dir, held, resumed_from, own, newer)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / ".lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(
            f"--out {out_dir} is in use by another training process; wait for it or choose another directory"
        ) from None
    if overwrite:
        for target in newer if own else [out_dir / name for name in held]:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return lock


def newer_checkpoints(out_dir: Path, checkpoint: Path) -> list[Path]:
    """Valid checkpoints of the run directory saved after `checkpoint` (another continuation's future;
    a damaged one, which resuming the directory skips, is none)."""
    name = checkpoint.resolve().name
    return [path for path in sorted((out_dir / "checkpoints").glob("step-*")) if path.name > name and loads(path)]


def loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except UserError:
        return False
    return True


def refuse_foreign_directory(
    out_dir: Path, held: list[str], resumed_from: Optional[Path], own: bool, newer: list[Path]
) -> None:
    if resumed_from is None and held:
        raise UserError(
            f"--out {out_dir} holds another run ({', '.join(held[:3])}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another directory"
        )
    if resumed_from is not None and not own and held:
        source = Path(resumed_from).resolve().parent.parent
        raise UserError(
            f"--out {out_dir} holds another run ({', '.join(held[:3])}), and --resume {resumed_from} continues "
            f"the run in {source}: resume into {source} itself or an empty directory, or pass --overwrite to "
            f"replace {out_dir}"
        )
    if newer:
        assert resumed_from is not None  # only a resumed run has newer checkpoints
        raise UserError(
            f"{out_dir} has checkpoints newer than {Path(resumed_from).name} ({', '.join(p.name for p in newer[:3])}): "
            "continuing from an older one would mix two continuations in one directory; resume from the newest "
            f"(--resume {out_dir}), into an empty directory, or pass --overwrite to discard the newer checkpoints"
        )
