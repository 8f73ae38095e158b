"""Flax variables <-> the canonical layout (torch state_dict names and tensor layouts)."""

from __future__ import annotations

import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from flaxloop.optim import AdagradState, AdamState, DampenedTraceState
from loopspec.checkpoint import Checkpoint, hyperparameter_state

# (collection, flax leaf) -> torch leaf
LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
    ("batch_stats", "num_batches_tracked"): "num_batches_tracked",
}


def canonical_name(collection: str, path: tuple[str, ...]) -> str:
    """('blocks_0', 'linear', 'kernel') in params -> 'blocks.0.linear.weight'."""
    *modules, leaf = path
    modules = [re.sub(r"_(\d+)$", r".\1", module) for module in modules]
    return ".".join([*modules, LEAF_NAMES[(collection, leaf)]])


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 2:  # Dense (in, out) -> Linear (out, in)
        return value.T
    if leaf == "kernel" and value.ndim == 4:  # Conv HWIO -> Conv2d OIHW
        return value.transpose(3, 2, 0, 1)
    return value


def from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    return value


def export_weights(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """params and batch_stats as canonical-layout NumPy arrays."""
    tensors = {}
    for collection in ("params", "batch_stats"):
        for path, value in traverse_util.flatten_dict(jax.device_get(variables.get(collection, {}))).items():
            array = np.asarray(value)
            if path[-1] == "num_batches_tracked":
                array = array.astype(np.int64)  # torch's buffer dtype
            tensors[canonical_name(collection, path)] = np.array(to_torch_layout(path[-1], array), order="C")
    return tensors


def import_weights(variables: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Replace every leaf of `variables` (arrays or shape structs) with its canonical tensor."""
    loaded = {}
    for collection, tree in variables.items():
        flat = traverse_util.flatten_dict(tree)
        loaded[collection] = traverse_util.unflatten_dict(
            {
                path: jax.numpy.asarray(
                    from_torch_layout(path[-1], tensors[canonical_name(collection, path)]), dtype=value.dtype
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


def export_optimizer(chain_state: tuple) -> dict[str, np.ndarray]:
    """The buffers of an optax chain's state by parameter name and torch slot."""
    fields, tensors = slot_fields(), {}
    for state in chain_state:
        for field, slot in fields.get(type(state), {}).items():
            tree = getattr(state, field)
            if tree is not None:
                for name, value in export_weights({"params": tree}).items():
                    tensors[f"{name}.{slot}"] = value
    return tensors


def import_optimizer(chain_state: tuple, tensors: dict[str, np.ndarray], steps: int) -> tuple:
    """The chain's state with the buffers (where the checkpoint has them) and counts replaced."""
    fields, states = slot_fields(), []
    for state in chain_state:
        replaced = {}
        for field, slot in fields.get(type(state), {}).items():
            tree = getattr(state, field)
            names = {name for name in export_weights({"params": tree})} if tree is not None else set()
            if names and all(f"{name}.{slot}" in tensors for name in names):
                slots = {name: tensors[f"{name}.{slot}"] for name in names}
                replaced[field] = import_weights({"params": tree}, slots)["params"]
        if type(state) in fields and "count" in state._fields:  # (a NamedTuple: `count` is also a method)
            replaced["count"] = jax.numpy.asarray(steps, state.count.dtype)
        states.append(state._replace(**replaced) if replaced else state)
    return tuple(states)


def export_training_state(
    state: Any, lr: float, momentum: Optional[float], plateau: Any = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A TrainState (on the host) in the checkpoint layout both backends read: model.*, optimizer.*
    and rng.jax tensors, and the JSON state with `lr` and `momentum`, the doubles the next update
    uses (the state holds the last update's, rounded), so a resumed torch scheduler continues exactly."""
    inject = hyperparams_state(state.opt_state)
    tensors = {f"model.{name}": value for name, value in export_weights(variables_of(state)).items()}
    if int(inject.count) > 0:  # before the first update the optimizer holds only its initial values
        tensors.update({f"optimizer.{name}": value for name, value in export_optimizer(inject.inner_state).items()})
    tensors["rng.jax"] = np.asarray(state.dropout_key)
    scale = state.loss_scale
    loss_scale = None if scale is None else (float(scale.scale), int(scale.growth_tracker))
    return tensors, hyperparameter_state(lr, momentum, plateau, loss_scale)


def load_training_state(state: Any, checkpoint: Checkpoint, updates_per_epoch: int) -> Any:
    """The TrainState continued from a checkpoint of either backend: weights, optimizer slots and counts,
    the injected learning rate (and momentum), optax.MultiSteps' window count, the fp16 loss scale, the
    forward-pass count (parity dropout), and a JAX run's own dropout key (framework-mode dropout)."""
    position, saved = checkpoint.state["position"], checkpoint.state
    steps = position["step"]
    variables = import_weights(variables_of(state), checkpoint.prefixed("model"))
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
        inner_state=import_optimizer(inject.inner_state, checkpoint.prefixed("optimizer"), steps),
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
