"""The TrainState pytree of a JAX run: weights, BatchNorm statistics, the optax state (with the
learning rate injected), the dropout key and counters, and the fp16 loss scale; and the helpers
that read and write it between steps. Only JAX keeps its training state in one immutable tree;
torch's lives in its model, optimizer, scheduler and GradScaler objects."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from flaxloop.checkpoint import NameMap, hyperparams_state, import_weights
from flaxloop.models import FlaxModel
from flaxloop.precision import LossScale
from loopspec.run import RunSetup


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_key: jax.Array
    forward_passes: jax.Array  # training forward passes so far: each draws its own dropout key
    loss_scale: Optional[LossScale] = None  # fp16 only


def create_train_state(
    setup: RunSetup, model: FlaxModel, names: NameMap, tx: optax.GradientTransformation, dtype: Any
) -> TrainState:
    """The model's variables from the run's initial weights (or its own init), and the optimizer's."""
    config = setup.config
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = model_sample(setup, dtype)
    if setup.initial_weights is None:
        variables = in_dtype(jax.jit(model.init)(init_key, sample), dtype)
    else:  # only the structure is needed: the values come from the canonical weights
        shapes = in_dtype(jax.eval_shape(model.init, init_key, sample), dtype)
        variables = import_weights(shapes, setup.initial_weights, names)

    @jax.jit
    def create(variables: dict[str, Any]) -> TrainState:  # jitted: optimizer-state init op by op is slow
        loss_scale = LossScale.create(config.train.loss_scale) if config.train.precision == "fp16" else None
        return TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
            dropout_key=dropout_key,
            forward_passes=jnp.zeros([], jnp.int32),
            loss_scale=loss_scale,
        )

    return create(variables)


def in_dtype(tree: Any, dtype: Any) -> Any:
    """Every floating leaf (array or shape) in the run's weight dtype: a user's module may declare
    float32 parameters, and a float64 run keeps them in float64 (integer counters stay)."""

    def cast(leaf: Any) -> Any:
        if not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == dtype:
            return leaf
        return jax.ShapeDtypeStruct(leaf.shape, dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf.astype(dtype)

    return jax.tree.map(cast, tree)


def model_sample(setup: RunSetup, dtype: Any) -> jax.Array:
    """Two zero samples of the data's shape: float inputs in the weights' dtype, token ids as int32."""
    integer = np.issubdtype(setup.dataset.x_train.dtype, np.integer)
    return jnp.zeros((2, *setup.dataset.input_shape), jnp.int32 if integer else dtype)


def set_learning_rate(state: TrainState, lr: float, momentum: Optional[float] = None) -> TrainState:
    """Write a new learning rate (and cycled momentum) into the optimizer state, between epochs."""
    inner = hyperparams_state(state.opt_state)
    values = {"learning_rate": lr} if momentum is None else {"learning_rate": lr, "momentum": momentum}
    hyperparams = {**inner.hyperparams, **{k: jnp.asarray(v, inner.hyperparams[k].dtype) for k, v in values.items()}}
    inner = inner._replace(hyperparams=hyperparams)
    if isinstance(state.opt_state, optax.MultiStepsState):
        return state.replace(opt_state=state.opt_state._replace(inner_opt_state=inner))
    return state.replace(opt_state=inner)


class StepMetrics(NamedTuple):
    """What one update used and measured, on the device until the loop reads it back."""

    loss: jax.Array
    lr: jax.Array
    grad_norm: jax.Array
    momentum: Optional[jax.Array]
    clipped: jax.Array
    loss_scale: Optional[jax.Array]
    finite: jax.Array  # the loss (and, without fp16 loss scaling, the gradient) is finite
    overflow: jax.Array  # fp16: the gradients overflowed at this loss scale


def step_metrics(
    state: TrainState, loss: jax.Array, loss_scale: Optional[LossScale] = None, overflow: Any = False
) -> StepMetrics:
    """What the update used and measured, read from the optimizer state. With fp16, a gradient
    overflow is the loss scaler's to handle; only a non-finite loss is not finite."""
    norm, clipped = optax.tree.get(state.opt_state, "global_norm"), optax.tree.get(state.opt_state, "clipped")
    hyperparams = hyperparams_state(state.opt_state).hyperparams
    finite = jnp.isfinite(loss) if loss_scale is not None else jnp.isfinite(loss) & jnp.isfinite(norm)
    return StepMetrics(
        loss,
        hyperparams["learning_rate"],
        norm,
        hyperparams.get("momentum"),
        clipped,
        None if loss_scale is None else loss_scale.scale,
        finite,
        jnp.asarray(overflow),
    )


def pack_metrics(metrics: StepMetrics) -> jax.Array:
    """The fields present, in order, in one array of their widest float dtype (exact: flags become 0/1),
    so the loop reads an update back with one device-to-host copy instead of one per field."""
    present = [jnp.asarray(value) for value in metrics if value is not None]
    dtype = jnp.result_type(*[v.dtype for v in present if jnp.issubdtype(v.dtype, jnp.floating)])
    return jnp.stack([v.astype(dtype) for v in present])


def packing_metrics(
    step: Callable[[TrainState, Any], tuple[TrainState, StepMetrics]],
) -> Callable[[TrainState, Any], tuple[TrainState, jax.Array]]:
    """`step` returning its metrics packed (pack_metrics), to be jitted as one program."""

    def packed_step(state: TrainState, window: Any) -> tuple[TrainState, jax.Array]:
        new_state, metrics = step(state, window)
        return new_state, pack_metrics(metrics)

    return packed_step


def unpack_metrics(packed: np.ndarray, present: tuple[bool, ...]) -> StepMetrics:
    """pack_metrics' array back as StepMetrics on the host; `present`: which fields the step fills."""
    values = iter(packed)
    fields: list[Any] = [next(values) if filled else None for filled in present]
    return StepMetrics(*fields)


def where_tree(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)
