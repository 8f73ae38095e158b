"""Flax variables <-> the canonical layout (torch state_dict names and tensor layouts)."""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np
import optax
from flax import traverse_util

from flaxloop.optim import AdagradState, AdamState, DampenedTraceState

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
