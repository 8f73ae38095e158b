"""The JAX backend: `python -m flaxloop.train --config FILE --out DIR`.

A functional core as in the Flax examples: a TrainState pytree, `train_step(state, window)
-> (state, metrics)` as a pure function under jax.jit, the optimizer one optax.chain (in
optax.MultiSteps when it accumulates). The loop around it (epochs, batches, records, early
stopping) is loopspec/loop.py, shared with the torch backend; this module holds only what
JAX does. torchloop/train.py has the same functions in the same order.
"""

# ruff: noqa: E402  (the signal handlers below come before the framework imports)
from __future__ import annotations

if __name__ == "__main__":  # before the heavy imports: Ctrl-C during them is one line, not a traceback
    from loopspec.cli import exit_quietly_on_signals

    exit_quietly_on_signals("python -m flaxloop.train")

import contextlib
import functools
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flaxloop.checkpoint import (
    NameMap,
    export_training_state,
    export_weights,
    hyperparams_state,
    load_training_state,
    variables_of,
)
from flaxloop.dropout import parity_dropout_masks
from flaxloop.gradients import MaskFn, replica_gradients
from flaxloop.losses import LossFn, make_loss
from flaxloop.models import build_model, path_key
from flaxloop.multisteps import dispatch_multisteps, multisteps_micro_step
from flaxloop.optim import make_tx
from flaxloop.parallel import replica_mesh, replica_scope, replicate, request_cpu_devices, shard_replica_axis
from flaxloop.precision import compute_dtype, param_dtype, precision_scope, resolve_device
from flaxloop.schedules import ReduceLROnPlateau
from flaxloop.state import (
    StepMetrics,
    TrainState,
    create_train_state,
    model_sample,
    packing_metrics,
    set_learning_rate,
    step_metrics,
    unpack_metrics,
    where_tree,
)
from loopspec.checkpoint import Checkpoint
from loopspec.cli import run_cli
from loopspec.config import Config
from loopspec.loop import MicroBatch, Outcome, StepResult, backend_fit
from loopspec.parallel import Placement, replica_shards
from loopspec.run import RunSetup
from loopspec.schedules import schedule_values


def train_step(
    state: TrainState, window: dict[str, Any], loss_fn: LossFn, masks_fn: Optional[MaskFn] = None
) -> tuple[TrainState, StepMetrics]:
    """One optimizer update from the mean gradient of a window of micro-batches.

    window["stack"] holds equal-sized micro-batches stacked on a leading axis (scanned);
    window["tail"] a last micro-batch of another size (the epoch's short batch). Without
    accumulation the window is just a tail. With window["data"], the training split on the
    device, a micro-batch holds its rows' indices, gathered in the step. An update that is not
    finite (or overflows fp16) is skipped here, in the step, so the loop can read the flags an
    update late.
    """
    stack, tail, data = window.get("stack"), window.get("tail"), window.get("data")
    count = (0 if stack is None else len(jax.tree.leaves(stack)[0])) + (0 if tail is None else 1)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    loss_dtype = jax.tree.leaves(state.params)[0].dtype
    carry = (zeros, jnp.zeros([], loss_dtype), state.batch_stats, state.forward_passes)

    def accumulate_micro(carry: tuple, micro: dict[str, Any]) -> tuple[tuple, None]:
        grad_sum, loss_sum, batch_stats, passes = carry
        loss, grads, batch_stats = replica_gradients(
            state, batch_stats, passes, micro, 1.0 / count, loss_fn, masks_fn, data
        )
        return (jax.tree.map(jnp.add, grad_sum, grads), loss_sum + loss, batch_stats, passes + 1), None

    if stack is not None:
        carry, _ = jax.lax.scan(accumulate_micro, carry, stack)
    if tail is not None:
        carry, _ = accumulate_micro(carry, tail)
    grads, loss, batch_stats, passes = carry
    scaler, overflow = state.loss_scale, jnp.zeros([], bool)
    if scaler is not None:  # fp16: unscale, and let the scaler judge the gradients
        grads = scaler.unscale(grads)
        overflow = ~jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    stepped = state.apply_gradients(grads=grads, batch_stats=batch_stats, forward_passes=passes)
    metrics = step_metrics(stepped, loss, scaler, overflow)
    # A skipped update keeps the weights, optimizer state and step count (GradScaler.step skips on
    # overflow); a non-finite one also undoes the window's BatchNorm statistics, which an fp16
    # overflow keeps, as in torch. Forward passes (dropout keys) and the loss scale move on.
    skip, undo_stats = overflow | ~metrics.finite, ~metrics.finite
    new_state = stepped.replace(
        params=where_tree(skip, state.params, stepped.params),
        opt_state=where_tree(skip, state.opt_state, stepped.opt_state),
        step=where_tree(skip, state.step, stepped.step),
        batch_stats=where_tree(undo_stats, state.batch_stats, stepped.batch_stats),
        loss_scale=None if scaler is None else scaler.update(overflow),
    )
    return new_state, metrics


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, loss_fn: LossFn) -> tuple[jax.Array, jax.Array]:
    logits, _ = state.apply_fn(variables_of(state), x, False)
    logits = logits.astype(jax.tree.leaves(state.params)[0].dtype)  # the loss in the weights' dtype
    return loss_fn(logits, y), logits


def stack_window(micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Equal-sized micro-batches stacked for lax.scan; a differently sized last one as the tail."""
    if len(micro_batches) == 1:
        return {"tail": micro_batches[0]}
    # jax's stubs leave the type of PyTreeDef unresolved, so mypy rejects its ==
    equal = (
        jax.tree.structure(micro_batches[-1]) == jax.tree.structure(micro_batches[0])  # type: ignore[operator]
        and [leaf.shape for leaf in jax.tree.leaves(micro_batches[-1])]
        == [leaf.shape for leaf in jax.tree.leaves(micro_batches[0])]
    )
    stacked = micro_batches if equal else micro_batches[:-1]
    window = {"stack": jax.tree.map(lambda *leaves: np.stack(leaves), *stacked)}
    if not equal:
        window["tail"] = micro_batches[-1]
    return window


def inputs_as(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Float inputs in the weights' dtype; integer inputs (token ids) as int32, JAX's default int."""
    return x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x.astype(dtype)


def device_dataset(x: np.ndarray, y: np.ndarray, device: jax.Device) -> Optional[tuple[jax.Array, jax.Array]]:
    """The training split on an accelerator once, when it takes at most a quarter of its memory: each step
    gathers its rows there, with no batch to copy in. Not on the CPU, where the host's gather is the device's,
    and where a split in the step's arguments would make runs of other sizes compile their own step."""
    if device.platform == "cpu" or x.nbytes + y.nbytes > (device.memory_stats() or {}).get("bytes_limit", 0) // 4:
        return None
    placed: tuple[jax.Array, jax.Array] = jax.device_put((x, y), device)
    return placed


class Dispatched(NamedTuple):
    state: TrainState  # after the update
    metrics: StepMetrics | jax.Array  # packed on the device (pack_metrics), or read back (optax.MultiSteps)


class JaxBackend:
    """The TrainState and compiled steps of one run (loopspec.loop.Backend)."""

    name = "jax"
    readback_lag = 1  # read an update back after dispatching the next: the host never waits

    @staticmethod
    @contextlib.contextmanager
    def scope(config: Config) -> Iterator[Placement]:
        """float64 (scoped x64), the device, the matmul precision and the replicas for the whole run;
        an unusable device, precision or replica count is refused before anything is written."""
        request_cpu_devices(config.train.devices, config.train.device)
        with precision_scope(config.train.precision, config.train.device, config.train.tf32) as device:
            with replica_scope(config.train.devices, device) as placement:
                yield placement

    def __init__(self, setup: RunSetup):
        config, data = setup.config, setup.dataset
        self.setup, self.dtype = setup, param_dtype(config.train.precision)
        self.x_train, self.x_val = inputs_as(data.x_train, self.dtype), inputs_as(data.x_val, self.dtype)
        device = resolve_device(config.train.device)
        self.mesh = replica_mesh(setup.placement, device)
        # One device: the training split there (replicas take their batches' shards from the host).
        self.train_data = device_dataset(self.x_train, data.y_train, device) if self.mesh is None else None
        compute = compute_dtype(config.train.precision)
        self.model = build_model(
            config.model, data.input_shape, setup.out_dim, compute, self.dtype, setup.models.get("jax")
        )
        sample = model_sample(setup, self.dtype)
        self.names = NameMap.build(
            jax.eval_shape(self.model.init, jax.random.PRNGKey(0), sample),
            setup.weight_shapes,
            self.model.names(config.model.name_map),
        )
        state = create_train_state(setup, self.model, self.names, make_tx(setup, self.dtype), self.dtype)
        layers = self.model.dropout_layers(variables_of(state), sample) if setup.parity_dropout_asked else []
        setup.dropout_layers = [(path_key(path), shape, rate) for path, shape, rate in layers]
        self.state = replicate(state, self.mesh)
        loss_fn = setup.losses.get("jax") or make_loss(config.loss, data.num_classes, setup.out_dim)
        train = config.train
        self.multisteps = train.accumulation == "multisteps" and train.accumulation_steps > 1
        masks_fn = (
            functools.partial(parity_dropout_masks, layers=setup.parity_dropout_layers, dtype=self.dtype)
            if setup.parity_dropout
            else None
        )
        step = functools.partial(train_step, loss_fn=loss_fn, masks_fn=masks_fn)
        self.step_fn = jax.jit(packing_metrics(step))  # one array to read back per update, not one per field
        # which StepMetrics fields the step fills (momentum when the optimizer cycles it, the loss scale in fp16)
        shapes = jax.eval_shape(lambda s: step_metrics(s, jnp.zeros([]), s.loss_scale), state)
        self.metric_fields = tuple(value is not None for value in shapes)
        self.micro_fn = jax.jit(
            functools.partial(multisteps_micro_step, loss_fn=loss_fn, masks_fn=masks_fn), static_argnames="scale"
        )
        self.eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))
        self.plateau = (
            ReduceLROnPlateau(config.schedule, config.optimizer.lr) if config.schedule.name == "plateau" else None
        )
        # torch's doubles at every schedule index: what a checkpoint saves, and what an epoch schedule
        # stores (rounded once) after each validation.
        self.schedule = schedule_values(config, setup.plan, setup.schedule_horizon)
        self.epochs_done = 0

    def micro_batch(self, micro: MicroBatch) -> dict[str, Any]:
        """The micro-batch's arrays; with replicas, its contiguous shards and their loss weights,
        stacked on a replica axis when they are equal (loopspec.parallel)."""
        placement, rows = self.setup.placement, micro.rows
        parts = replica_shards(rows, self.setup.dataset.y_train, self.setup.config.loss, placement.replicas)
        shards: list[dict[str, Any]] = []
        for position, weight in parts:
            if self.train_data is not None:  # gathered in the step
                shard: dict[str, Any] = {"rows": np.asarray(rows[position], np.int32)}
            else:
                shard = {"x": self.x_train[rows[position]], "y": self.setup.dataset.y_train[rows[position]]}
            if self.setup.parity_dropout:  # the masks' rows: generated in the step (flaxloop.dropout)
                shard["mask_rows"] = np.asarray(micro.positions[position], np.uint32)
                shard["mask_seed"] = np.asarray(self.setup.config.seed, np.uint32)
            if placement.replicas > 1:
                shard["weight"] = np.asarray(weight, self.dtype)
                shard["replica"] = np.asarray(len(shards), np.int32)
            shards.append(shard)
        if placement.replicas == 1:
            return shards[0]
        if len({len(shard["y"]) for shard in shards}) == 1:
            return {"replicas": jax.tree.map(lambda *leaves: np.stack(leaves), *shards)}
        return {"replicas": tuple(shards)}

    def place(self, window: dict[str, Any]) -> dict[str, Any]:
        """Each replica's shards on its device: the replica axis follows the scan axis in "stack"."""
        if self.mesh is None:
            return window
        placed = {}
        for part, axis in (("stack", 1), ("tail", 0)):
            if part in window:
                replicas = window[part]["replicas"]
                if isinstance(replicas, dict):
                    replicas = shard_replica_axis(replicas, self.mesh, axis)
                placed[part] = {"replicas": replicas}
        return placed

    def dispatch(self, window: Sequence[MicroBatch]) -> Dispatched:
        micro_batches = [self.micro_batch(micro) for micro in window]
        data = {} if self.train_data is None else {"data": self.train_data}
        if self.multisteps:
            micro_batches = [{**micro, **data} for micro in micro_batches]
            self.state, metrics = dispatch_multisteps(self.state, self.micro_fn, micro_batches, self.place)
            return Dispatched(self.state, metrics)
        self.state, metrics = self.step_fn(self.state, self.place({**stack_window(micro_batches), **data}))
        return Dispatched(self.state, metrics)

    def read(self, handle: Dispatched) -> StepResult:
        metrics = handle.metrics
        m = metrics if isinstance(metrics, StepMetrics) else unpack_metrics(np.asarray(metrics), self.metric_fields)
        outcome: Outcome = "nonfinite" if not m.finite else "overflow" if m.overflow else "applied"
        optional = lambda value, kind: None if value is None else kind(value)  # noqa: E731
        return StepResult(
            outcome,
            float(m.loss),
            float(m.lr),
            float(m.grad_norm),
            optional(m.momentum, float),
            optional(m.clipped, bool),
            optional(m.loss_scale, float),
        )

    def rewind(self, handle: Dispatched) -> None:
        self.state = handle.state

    def evaluate(self, rows: slice) -> tuple[float, np.ndarray]:
        loss, logits = self.eval_fn(
            self.state, jnp.asarray(self.x_val[rows]), jnp.asarray(self.setup.dataset.y_val[rows])
        )
        return float(loss), np.asarray(logits, dtype=np.float64)

    def end_epoch(self, epochs_done: int, monitored: float) -> None:
        self.epochs_done = epochs_done
        if self.plateau is not None:
            self.state = set_learning_rate(self.state, self.plateau.step(monitored))
        elif self.setup.plan.interval == "epoch" and self.setup.config.schedule.name != "none":
            self.state = set_learning_rate(self.state, *self.schedule.value(epochs_done))

    def export_weights(self) -> dict[str, np.ndarray]:
        return export_weights(variables_of(self.state), self.names)

    def export_state(self, handle: Optional[Dispatched]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state after `handle`'s update (a later update may already be dispatched)."""
        state = jax.device_get(self.state if handle is None else handle.state)
        if self.plateau is not None:
            lr, momentum = self.plateau.lr, None
        else:  # applied updates (state.step counts optax.MultiSteps' micro-steps), or epochs done
            index = int(hyperparams_state(state.opt_state).count) if self.setup.plan.interval == "step" else None
            lr, momentum = self.schedule.value(self.epochs_done if index is None else index)
        return export_training_state(state, lr, momentum, self.plateau, self.names)

    def import_state(self, checkpoint: Checkpoint) -> None:
        state = load_training_state(self.state, checkpoint, self.setup.plan.updates_per_epoch, self.names)
        self.state = replicate(state, self.mesh)
        self.epochs_done = checkpoint.state["position"]["epoch"] - 1
        if self.plateau is not None:
            for key, value in checkpoint.state["plateau"].items():
                setattr(self.plateau, key, value)
            self.plateau.lr = checkpoint.state["hyperparameters"]["lr"]

    def any_replica_interrupted(self, signum: Optional[int]) -> Optional[int]:
        return signum  # one process drives every replica


fit = backend_fit(JaxBackend)

if __name__ == "__main__":
    raise SystemExit(run_cli("python -m flaxloop.train", "jax", fit))
