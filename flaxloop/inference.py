"""A trained network back from its weights: the flax module with its variables, and its logits."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flaxloop.checkpoint import NameMap, import_weights
from flaxloop.models import FlaxModel, build_model
from flaxloop.state import in_dtype
from loopspec.models import output_dim
from loopspec.weights import float_dtype


class TrainedModel(NamedTuple):
    """The flax model and its variables ({"params", "batch_stats"}); call it for eval-mode logits.
    `module` is the flax.linen or flax.nnx module itself; `model` its FlaxModel (flaxloop.models)."""

    model: FlaxModel
    variables: dict[str, Any]

    @property
    def module(self) -> Any:
        return getattr(self.model, "module", self.model)

    @property
    def dtype(self) -> Any:
        return jax.tree_util.tree_leaves(self.variables["params"])[0].dtype

    def __call__(self, inputs: Any) -> jax.Array:
        with jax.enable_x64(self.dtype == jnp.float64):  # a float64 model computes in float64
            inputs = np.asarray(inputs)
            dtype = jnp.int32 if np.issubdtype(inputs.dtype, np.integer) else self.dtype
            return self.model.apply(self.variables, jnp.asarray(inputs, dtype), False)[0]


def load_model(run: Any, weights: dict[str, np.ndarray]) -> TrainedModel:
    """The run's architecture (a loopspec.results.Run) with `weights`, in their dtype."""
    out_dim = output_dim(run.config.loss.name, run.num_classes)
    dtype = jnp.float64 if float_dtype(weights) == np.float64 else jnp.float32
    with jax.enable_x64(dtype == jnp.float64):
        model = build_model(run.config.model, run.input_shape, out_dim, dtype, dtype, run.models.get("jax"))
        sample = jnp.zeros((1, *run.input_shape), jnp.int32 if run.integer_inputs else dtype)
        shapes = in_dtype(jax.eval_shape(model.init, jax.random.PRNGKey(0), sample), dtype)
        reference = {name: tuple(value.shape) for name, value in weights.items()}
        names = NameMap.build(shapes, reference, model.names(run.config.model.name_map))
        return TrainedModel(model, import_weights(shapes, weights, names))


def predict(model: TrainedModel, inputs: np.ndarray) -> np.ndarray:
    """Logits (float64 NumPy) for a batch (N, *input_shape)."""
    with jax.enable_x64(model.dtype == jnp.float64):
        return np.asarray(model(inputs), dtype=np.float64)
