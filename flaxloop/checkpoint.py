"""Flax variables <-> the canonical layout (torch state_dict names and tensor layouts)."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from flaxloop.optim import AdagradState, AdamState, DampenedTraceState
from loopspec.checkpoint import Checkpoint, hyperparameter_state
from loopspec.errors import UserError

# (collection, flax leaf) -> torch leaf, by the kind of flax module that holds it
LEAF_NAMES = {
    ("params", "kernel"): "weight",  # Dense, Conv (1-D, 2-D, 3-D)
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",  # LayerNorm, BatchNorm
    ("params", "embedding"): "weight",  # Embed
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
    ("batch_stats", "num_batches_tracked"): "num_batches_tracked",
}
Path = tuple[Any, ...]


def convention_name(collection: str, path: Path) -> Optional[str]:
    """The torch name the convention gives a flax leaf: modules joined by dots, a trailing `_<n>` as
    `.<n>` (linen's `blocks_0` for torch's `blocks.0`; nnx's paths hold the index already), the leaf
    by its module's kind. None for a leaf the convention does not know."""
    *modules, leaf = (str(part) for part in path)
    torch_leaf = LEAF_NAMES.get((collection, leaf))
    if torch_leaf is None:
        return None
    return ".".join([*(re.sub(r"_(\d+)$", r".\1", module) for module in modules), torch_leaf])


def normalized(name: str) -> str:
    """Separators made one: flax `blocks_0/norm` and `blocks_0_norm` meet torch `blocks.0.norm`."""
    return re.sub(r"[._/]+", ".", name)


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """Dense (in, out) -> Linear (out, in); Conv (k..., in, out) -> Conv1d/2d/3d (out, in, k...)."""
    if leaf == "kernel" and value.ndim >= 2:
        return value.transpose(value.ndim - 1, value.ndim - 2, *range(value.ndim - 2))
    return value


def torch_layout_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(shape)
    if leaf == "kernel" and len(shape) >= 2:
        return (shape[-1], shape[-2], *shape[:-2])
    return shape


def from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim >= 2:
        return value.transpose(*range(2, value.ndim), 1, 0)
    return value


def flax_leaves(variables: dict[str, Any]) -> dict[tuple[str, Path], Any]:
    return {
        (collection, path): value
        for collection in ("params", "batch_stats")
        for path, value in traverse_util.flatten_dict(variables.get(collection) or {}).items()
    }


def unflatten_leaves(leaves: dict[tuple[str, Path], Any]) -> dict[str, Any]:
    """flax_leaves inverted: {(collection, path): leaf} -> {collection: nested dict}."""
    variables: dict[str, Any] = {}
    for collection in ("params", "batch_stats"):
        flat = {path: leaf for (kind, path), leaf in leaves.items() if kind == collection}
        if flat:
            variables[collection] = traverse_util.unflatten_dict(flat)
    return variables


@dataclass(frozen=True)
class NameMap:
    """Every flax leaf's torch state_dict name, one to one: `model.name_map` first (`path/in/flax` or
    `batch_stats/path` -> torch name), then the convention (convention_name), matched against the torch
    names when they are known (a torch module's state_dict, or --init weights) with separators
    normalised. Built once per model; anything unmatched on either side is one line naming it."""

    names: dict[tuple[str, Path], str]

    @classmethod
    def build(
        cls,
        variables: dict[str, Any],
        reference: Optional[dict[str, tuple[int, ...]]] = None,
        explicit: Optional[dict[str, str]] = None,
    ) -> "NameMap":
        explicit = explicit or {}
        by_normal: dict[str, list[str]] = {}
        for torch_name in reference or {}:
            by_normal.setdefault(normalized(torch_name), []).append(torch_name)
        names: dict[tuple[str, Path], str] = {}
        unnamed: list[str] = []
        leaves = flax_leaves(variables)
        for collection, path in leaves:
            key = "/".join(str(part) for part in path)
            name = explicit.get(key, explicit.get(f"{collection}/{key}"))
            if name is None:
                name = convention_name(collection, path)
                if name is not None and reference is not None and name not in reference:
                    matches = by_normal.get(normalized(name), [])
                    name = matches[0] if len(matches) == 1 else None
            if name is None:
                unnamed.append(f"{collection}/{key}" if collection != "params" else key)
            else:
                names[(collection, path)] = name
        mapping = cls(names)
        mapping.check(leaves, unnamed, reference)
        return mapping

    def check(
        self, leaves: dict[tuple[str, Path], Any], unnamed: list[str], reference: Optional[dict[str, tuple]]
    ) -> None:
        problems = []
        if unnamed:
            problems.append(f"flax tensors without a torch name: {', '.join(unnamed[:4])}")
        counts = collections.Counter(self.names.values())
        twice = [name for name, count in counts.items() if count > 1]
        if twice:
            problems.append(f"torch names given to two flax tensors: {', '.join(twice[:4])}")
        if reference is not None:
            missing = [name for name in reference if name not in counts]
            if missing:
                problems.append(f"torch tensors without a flax one: {', '.join(missing[:4])}")
            for (collection, path), name in self.names.items():
                shape = torch_layout_shape(str(path[-1]), leaves[(collection, path)].shape)
                if name in reference and tuple(reference[name]) != shape:
                    problems.append(f"{name} is {tuple(reference[name])} in torch, {shape} from flax {path}")
                    break
        if problems:
            raise UserError(
                "the torch and flax models do not match tensor for tensor: "
                + "; ".join(problems)
                + ". Name the flax module as the torch attribute (blocks_0 for blocks.0), or map it with "
                "model.name_map {flax path: torch name} (docs/models.md)"
            )

    def torch_name(self, collection: str, path: Path) -> str:
        return self.names[(collection, path)]


def export_weights(variables: dict[str, Any], names: Optional[NameMap] = None) -> dict[str, np.ndarray]:
    """params and batch_stats as canonical-layout NumPy arrays under torch's names."""
    names = names or NameMap.build(variables)
    tensors = {}
    for (collection, path), value in flax_leaves(jax.device_get(variables)).items():
        array = np.asarray(value)
        if str(path[-1]) == "num_batches_tracked":
            array = array.astype(np.int64)  # torch's buffer dtype
        tensors[names.torch_name(collection, path)] = np.array(to_torch_layout(str(path[-1]), array), order="C")
    return tensors


def import_weights(
    variables: dict[str, Any], tensors: dict[str, np.ndarray], names: Optional[NameMap] = None
) -> dict[str, Any]:
    """Replace every leaf of `variables` (arrays or shape structs) with its canonical tensor."""
    names = names or NameMap.build(variables)
    loaded = {}
    for collection, tree in variables.items():
        flat = traverse_util.flatten_dict(tree or {})
        loaded[collection] = traverse_util.unflatten_dict(
            {
                path: jax.numpy.asarray(
                    from_torch_layout(str(path[-1]), tensors[names.torch_name(collection, path)]), dtype=value.dtype
                )
                for path, value in flat.items()
            }
        )
    return loaded


# ----------------------------------------------------------------------------- the training state
def variables_of(state: Any) -> dict[str, Any]:
    """A TrainState's flax variables: params and batch_stats."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def hyperparams_state(opt_state: Any) -> Any:
    """The optax.inject_hyperparams state (learning rate, momentum), under optax.MultiSteps or not."""
    return opt_state.inner_opt_state if isinstance(opt_state, optax.MultiStepsState) else opt_state


# Optimizer slots under torch's names (optimizer.<parameter name>.<slot>, torch layouts), so a
# checkpoint either backend writes resumes on the other.


def slot_fields() -> dict[type, dict[str, str]]:
    """optax state type -> {its field: torch's slot name}."""
    return {
        AdamState: {"mu": "exp_avg", "nu": "exp_avg_sq", "nu_max": "max_exp_avg_sq"},
        AdagradState: {"sum_of_squares": "sum"},
        DampenedTraceState: {"trace": "momentum_buffer"},
        optax.TraceState: {"trace": "momentum_buffer"},
        optax.ScaleByRmsState: {"nu": "square_avg"},
        optax.ScaleByRStdDevState: {"mu": "grad_avg", "nu": "square_avg"},
    }


def export_optimizer(chain_state: tuple, names: Optional[NameMap] = None) -> dict[str, np.ndarray]:
    """The buffers of an optax chain's state by parameter name and torch slot."""
    fields, tensors = slot_fields(), {}
    for state in chain_state:
        for field, slot in fields.get(type(state), {}).items():
            tree = getattr(state, field)
            if tree is not None:
                for name, value in export_weights({"params": tree}, names).items():
                    tensors[f"{name}.{slot}"] = value
    return tensors


def import_optimizer(
    chain_state: tuple, tensors: dict[str, np.ndarray], steps: int, names: Optional[NameMap] = None
) -> tuple:
    """The chain's state with the buffers (where the checkpoint has them) and counts replaced."""
    fields, states = slot_fields(), []
    for state in chain_state:
        replaced = {}
        for field, slot in fields.get(type(state), {}).items():
            tree = getattr(state, field)
            held = set(export_weights({"params": tree}, names)) if tree is not None else set()
            if held and all(f"{name}.{slot}" in tensors for name in held):
                slots = {name: tensors[f"{name}.{slot}"] for name in held}
                replaced[field] = import_weights({"params": tree}, slots, names)["params"]
        if type(state) in fields and "count" in state._fields:  # (a NamedTuple: `count` is also a method)
            replaced["count"] = jax.numpy.asarray(steps, state.count.dtype)
        states.append(state._replace(**replaced) if replaced else state)
    return tuple(states)


def export_training_state(
    state: Any, lr: float, momentum: Optional[float], plateau: Any = None, names: Optional[NameMap] = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A TrainState (on the host) in the checkpoint layout both backends read: model.*, optimizer.*
    and rng.jax tensors, and the JSON state with `lr` and `momentum`, the doubles the next update
    uses (the state holds the last update's, rounded), so a resumed torch scheduler continues exactly."""
    inject = hyperparams_state(state.opt_state)
    tensors = {f"model.{name}": value for name, value in export_weights(variables_of(state), names).items()}
    if int(inject.count) > 0:  # before the first update the optimizer holds only its initial values
        optimizer = export_optimizer(inject.inner_state, names)
        tensors.update({f"optimizer.{name}": value for name, value in optimizer.items()})
    tensors["rng.jax"] = np.asarray(state.dropout_key)
    scale = state.loss_scale
    loss_scale = None if scale is None else (float(scale.scale), int(scale.growth_tracker))
    return tensors, hyperparameter_state(lr, momentum, plateau, loss_scale)


def load_training_state(
    state: Any, checkpoint: Checkpoint, updates_per_epoch: int, names: Optional[NameMap] = None
) -> Any:
    """The TrainState continued from a checkpoint of either backend: weights, optimizer slots and counts,
    the injected learning rate (and momentum), optax.MultiSteps' window count, the fp16 loss scale, the
    forward-pass count (parity dropout), and a JAX run's own dropout key (framework-mode dropout)."""
    position, saved = checkpoint.state["position"], checkpoint.state
    steps = position["step"]
    variables = import_weights(variables_of(state), checkpoint.prefixed("model"), names)
    inject = hyperparams_state(state.opt_state)
    hyper = saved["hyperparameters"]
    values = {
        "learning_rate": hyper["lr"],
        **({"momentum": hyper["momentum"]} if "momentum" in inject.hyperparams else {}),
    }
    inject = inject._replace(
        count=jnp.asarray(steps, inject.count.dtype),
        hyperparams={
            k: jnp.asarray(v, inject.hyperparams[k].dtype) for k, v in {**inject.hyperparams, **values}.items()
        },
        # A per-step schedule counts its own updates (optax's WrappedScheduleState).
        hyperparams_states=jax.tree.map(lambda count: jnp.asarray(steps, count.dtype), inject.hyperparams_states),
        inner_state=import_optimizer(inject.inner_state, checkpoint.prefixed("optimizer"), steps, names),
    )
    opt_state = inject
    if isinstance(state.opt_state, optax.MultiStepsState):  # windows so far, applied or skipped
        windows = (position["epoch"] - 1) * updates_per_epoch + position["window"]
        opt_state = state.opt_state._replace(
            inner_opt_state=inject, gradient_step=jnp.asarray(windows, state.opt_state.gradient_step.dtype)
        )
    loss_scale = state.loss_scale
    if "loss_scale" in saved:
        loss_scale = loss_scale.replace(
            scale=jnp.asarray(saved["loss_scale"]["scale"], jnp.float32),
            growth_tracker=jnp.asarray(saved["loss_scale"]["growth_tracker"], jnp.int32),
        )
    dropout_key = state.dropout_key
    if "rng.jax" in checkpoint.tensors and saved["backend"] == "jax":  # framework-mode dropout
        dropout_key = jnp.asarray(checkpoint.tensors["rng.jax"], dropout_key.dtype)
    return state.replace(
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        opt_state=opt_state,
        step=jnp.asarray(steps, state.step.dtype),
        forward_passes=jnp.asarray(position["forward_passes"], jnp.int32),
        loss_scale=loss_scale,
        dropout_key=dropout_key,
    )
