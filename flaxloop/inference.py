"""A trained network back from its weights: the flax module with its variables, and its logits."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flaxloop.checkpoint import import_weights
from flaxloop.models import build_model
from loopspec.models import output_dim
from loopspec.weights import float_dtype


class TrainedModel(NamedTuple):
    """The flax module and its variables ({"params", "batch_stats"}); call it for eval-mode logits."""

    module: nn.Module
    variables: dict[str, Any]

    @property
    def dtype(self) -> Any:
        return jax.tree_util.tree_leaves(self.variables["params"])[0].dtype

    def __call__(self, inputs: Any) -> jax.Array:
        with jax.enable_x64(self.dtype == jnp.float64):  # a float64 model computes in float64
            return self.module.apply(self.variables, jnp.asarray(inputs, self.dtype), train=False)


def load_model(run: Any, weights: dict[str, np.ndarray]) -> TrainedModel:
    """The run's architecture (a loopspec.results.Run) with `weights`, in their dtype."""
    out_dim = output_dim(run.config.loss.name, run.num_classes)
    dtype = jnp.float64 if float_dtype(weights) == np.float64 else jnp.float32
    with jax.enable_x64(dtype == jnp.float64):
        module = build_model(run.config.model, run.input_shape, out_dim, dtype)
        init = functools.partial(module.init, train=False)
        shapes = jax.eval_shape(init, jax.random.PRNGKey(0), jnp.zeros((1, *run.input_shape), dtype))
        return TrainedModel(module, import_weights(shapes, weights))


def predict(model: TrainedModel, inputs: np.ndarray) -> np.ndarray:
    """Logits (float64 NumPy) for a batch (N, *input_shape)."""
    with jax.enable_x64(model.dtype == jnp.float64):
        return np.asarray(model(inputs), dtype=np.float64)
