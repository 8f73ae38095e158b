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
import optax
from flax.training import train_state

from flaxloop.checkpoint import export_optimizer, export_weights, import_optimizer, import_weights
from flaxloop.losses import LossFn, make_loss
from flaxloop.models import build_model
from flaxloop.optim import accumulate, make_optimizer
from flaxloop.parallel import replica_mesh, replica_scope, replicate, request_cpu_devices, shard_replica_axis
from flaxloop.precision import LossScale, compute_dtype, param_dtype, precision_scope, resolve_device
from flaxloop.schedules import ReduceLROnPlateau, make_schedules
from loopspec.batching import batches_per_epoch
from loopspec.checkpoint import Checkpoint
from loopspec.cli import run_cli
from loopspec.config import Config
from loopspec.loop import MicroBatch, StepResult, backend_fit
from loopspec.parallel import Placement, replica_shards
from loopspec.run import RunSetup
from loopspec.schedules import torch_schedule_values


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_key: jax.Array
    forward_passes: jax.Array  # training forward passes so far: each draws its own dropout key
    loss_scale: Optional[LossScale] = None  # fp16 only


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


def create_train_state(setup: RunSetup, tx: optax.GradientTransformation, dtype: Any) -> TrainState:
    """`dtype` holds the weights; the model computes in the precision's compute dtype."""
    config = setup.config
    model = build_model(
        config.model, setup.dataset.input_shape, setup.out_dim, compute_dtype(config.train.precision), dtype
    )
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((2, *setup.dataset.input_shape), dtype)
    init = functools.partial(model.init, train=False)
    if setup.initial_weights is None:
        variables = jax.jit(init)(init_key, sample)
    else:  # only the structure is needed: the values come from the canonical weights
        variables = import_weights(jax.eval_shape(init, init_key, sample), setup.initial_weights)

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


def make_tx(setup: RunSetup, dtype: Any) -> optax.GradientTransformation:
    config, train = setup.config, setup.config.train
    learning_rate, momentum = make_schedules(
        config.schedule, setup.plan, setup.schedule_horizon, config.optimizer.lr, dtype
    )
    tx = make_optimizer(config.optimizer, learning_rate, momentum, train.clip_grad_norm, train.clip_grad_value)
    if train.accumulation == "multisteps" and train.accumulation_steps > 1:
        batches = batches_per_epoch(len(setup.dataset.y_train), config.data.batch_size, config.data.drop_last)
        tx = accumulate(tx, train.accumulation_steps, batches, dtype)
    return tx


def variables_of(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def hyperparams_state(opt_state: Any) -> Any:
    """The optax.inject_hyperparams state (learning rate, momentum), under optax.MultiSteps or not."""
    return opt_state.inner_opt_state if isinstance(opt_state, optax.MultiStepsState) else opt_state


def set_learning_rate(state: TrainState, lr: float, momentum: Optional[float] = None) -> TrainState:
    """Write a new learning rate (and cycled momentum) into the optimizer state, between epochs."""
    inner = hyperparams_state(state.opt_state)
    values = {"learning_rate": lr} if momentum is None else {"learning_rate": lr, "momentum": momentum}
    hyperparams = {**inner.hyperparams, **{k: jnp.asarray(v, inner.hyperparams[k].dtype) for k, v in values.items()}}
    inner = inner._replace(hyperparams=hyperparams)
    if isinstance(state.opt_state, optax.MultiStepsState):
        return state.replace(opt_state=state.opt_state._replace(inner_opt_state=inner))
    return state.replace(opt_state=inner)


def micro_gradients(
    state: TrainState, batch_stats: Any, forward_pass: jax.Array, micro: dict[str, Any], scale: float, loss_fn: LossFn
) -> tuple[jax.Array, Any, Any]:
    """Loss * scale, the gradient of that times the fp16 loss scale, and the BatchNorm
    statistics after one micro-batch. The loss is computed in the weights' float dtype."""
    dropout_key = jax.random.fold_in(state.dropout_key, forward_pass)
    if "replica" in micro:  # framework-mode dropout: each replica draws its own masks
        dropout_key = jax.random.fold_in(dropout_key, micro["replica"])
    loss_scale = 1.0 if state.loss_scale is None else state.loss_scale.scale

    def compute_loss(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats},
            micro["x"],
            train=True,
            dropout_masks=micro.get("dropout_masks"),
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss = loss_fn(logits.astype(jax.tree.leaves(params)[0].dtype), micro["y"]) * scale
        return loss * loss_scale, (loss, updates.get("batch_stats", batch_stats))

    (_, (loss, new_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    return loss, grads, new_stats


def replica_gradients(
    state: TrainState, batch_stats: Any, forward_pass: jax.Array, micro: dict[str, Any], scale: float, loss_fn: LossFn
) -> tuple[jax.Array, Any, Any]:
    """micro_gradients of a micro-batch split over N replicas, as torch DDP computes it: each replica
    runs its shard (BatchNorm normalises with the shard's own statistics) with its loss weighted by
    N times its share of the global batch (so its backward, fp16 overflows included, sees what a
    DDP rank sees); the gradients are divided by N and summed (DDP's averaging all-reduce), and the
    BatchNorm running statistics are replica 0's (rank 0's buffers, broadcast after each update)."""
    if "replicas" not in micro:
        return micro_gradients(state, batch_stats, forward_pass, micro, scale, loss_fn)
    shards = micro["replicas"]
    replicas = len(shards) if isinstance(shards, tuple) else len(shards["weight"])

    def replica(shard: dict[str, Any]) -> tuple[jax.Array, Any, Any]:
        return micro_gradients(state, batch_stats, forward_pass, shard, scale * shard["weight"] * replicas, loss_fn)

    if isinstance(shards, dict):  # equal shards, stacked on a replica axis sharded over the devices
        losses, grads, stats = jax.vmap(replica)(shards)
        grads = jax.tree.map(lambda g: (g / replicas).sum(0), grads)
        return losses.sum() / replicas, grads, jax.tree.map(lambda s: s[0], stats)
    results = [replica(shard) for shard in shards]  # uneven shards: one after another
    loss = sum(result[0] for result in results) / replicas
    grads = jax.tree.map(lambda *g: sum(x / replicas for x in g), *[result[1] for result in results])
    return loss, grads, results[0][2]


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


def where_tree(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def train_step(state: TrainState, window: dict[str, Any], loss_fn: LossFn) -> tuple[TrainState, StepMetrics]:
    """One optimizer update from the mean gradient of a window of micro-batches.

    window["stack"] holds equal-sized micro-batches stacked on a leading axis (scanned);
    window["tail"] a last micro-batch of another size (the epoch's short batch). Without
    accumulation the window is just a tail. An update that is not finite (or overflows fp16)
    is skipped here, in the step, so the loop can read the flags an update late.
    """
    stack, tail = window.get("stack"), window.get("tail")
    count = (0 if stack is None else len(jax.tree.leaves(stack)[0])) + (0 if tail is None else 1)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    loss_dtype = jax.tree.leaves(state.params)[0].dtype
    carry = (zeros, jnp.zeros([], loss_dtype), state.batch_stats, state.forward_passes)

    def accumulate_micro(carry: tuple, micro: dict[str, Any]) -> tuple[tuple, None]:
        grad_sum, loss_sum, batch_stats, passes = carry
        loss, grads, batch_stats = replica_gradients(state, batch_stats, passes, micro, 1.0 / count, loss_fn)
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


def multisteps_micro_step(
    state: TrainState, micro: dict[str, Any], scale: float, loss_fn: LossFn
) -> tuple[TrainState, StepMetrics]:
    """One micro-batch under optax.MultiSteps: it accumulates, and applies on the window's last."""
    loss, grads, batch_stats = replica_gradients(state, state.batch_stats, state.forward_passes, micro, 1.0, loss_fn)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats, forward_passes=state.forward_passes + 1)
    return state, step_metrics(state, loss * scale)


def state_before_skipped_window(before: TrainState, after: TrainState) -> TrainState:
    """The state before a skipped window, with the counters that say where the run is: forward
    passes (dropout keys), the fp16 loss scale (which saw the failure, as torch's GradScaler
    does) and optax.MultiSteps' window count (its trailing-window rule)."""
    state = before.replace(forward_passes=after.forward_passes, loss_scale=after.loss_scale)
    if isinstance(after.opt_state, optax.MultiStepsState):
        state = state.replace(opt_state=before.opt_state._replace(gradient_step=after.opt_state.gradient_step))
    return state


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, loss_fn: LossFn) -> tuple[jax.Array, jax.Array]:
    logits = state.apply_fn(variables_of(state), x, train=False).astype(x.dtype)  # the loss in the weights' dtype
    return loss_fn(logits, y), logits


def stack_window(micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Equal-sized micro-batches stacked for lax.scan; a differently sized last one as the tail."""
    if len(micro_batches) == 1:
        return {"tail": micro_batches[0]}
    equal = jax.tree.structure(micro_batches[-1]) == jax.tree.structure(micro_batches[0]) and [
        leaf.shape for leaf in jax.tree.leaves(micro_batches[-1])
    ] == [leaf.shape for leaf in jax.tree.leaves(micro_batches[0])]
    stacked = micro_batches if equal else micro_batches[:-1]
    window = {"stack": jax.tree.map(lambda *leaves: np.stack(leaves), *stacked)}
    if not equal:
        window["tail"] = micro_batches[-1]
    return window


class Dispatched(NamedTuple):
    state: TrainState  # after the update
    metrics: StepMetrics  # on the device, or already read back (optax.MultiSteps)


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
        self.x_train, self.x_val = data.x_train.astype(self.dtype), data.x_val.astype(self.dtype)
        self.mesh = replica_mesh(setup.placement, resolve_device(config.train.device))
        self.state = replicate(create_train_state(setup, make_tx(setup, self.dtype), self.dtype), self.mesh)
        loss_fn = make_loss(config.loss, data.num_classes, setup.out_dim)
        train = config.train
        self.multisteps = train.accumulation == "multisteps" and train.accumulation_steps > 1
        self.step_fn = jax.jit(functools.partial(train_step, loss_fn=loss_fn))
        self.micro_fn = jax.jit(functools.partial(multisteps_micro_step, loss_fn=loss_fn), static_argnames="scale")
        self.eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))
        self.plateau = (
            ReduceLROnPlateau(config.schedule, config.optimizer.lr) if config.schedule.name == "plateau" else None
        )
        # torch's doubles at every schedule index: what a checkpoint saves, and what an epoch schedule
        # stores (rounded once) after each validation.
        self.scheduled = torch_schedule_values(
            config.schedule, setup.schedule_horizon, config.optimizer.lr, setup.plan.total_updates + 1
        )
        self.epochs_done = 0

    def schedule_value(self, index: int) -> tuple[float, Optional[float]]:
        lrs, momenta = self.scheduled
        return lrs[index], None if momenta is None else momenta[index]

    def micro_batch(self, micro: MicroBatch) -> dict[str, Any]:
        """The micro-batch's arrays; with replicas, its contiguous shards and their loss weights,
        stacked on a replica axis when they are equal (loopspec.parallel)."""
        placement, rows = self.setup.placement, micro.rows
        parts = replica_shards(rows, self.setup.dataset.y_train, self.setup.config.loss, placement.replicas)
        shards = []
        for position, weight in parts:
            shard = {"x": self.x_train[rows[position]], "y": self.setup.dataset.y_train[rows[position]]}
            if micro.dropout_masks is not None:
                shard["dropout_masks"] = [m[position].astype(self.dtype) for m in micro.dropout_masks]
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
        if self.multisteps:
            return self.dispatch_multisteps(micro_batches)
        self.state, metrics = self.step_fn(self.state, self.place(stack_window(micro_batches)))
        return Dispatched(self.state, metrics)

    def dispatch_multisteps(self, micro_batches: list[dict[str, Any]]) -> Dispatched:
        """optax.MultiSteps has no in-step guard: the window is read back here and undone on the host."""
        before, losses = self.state, []
        for micro in micro_batches:
            micro = self.place({"tail": micro})["tail"]
            self.state, metrics = self.micro_fn(self.state, micro, scale=1.0 / len(micro_batches))
            losses.append(metrics.loss)
        metrics = jax.device_get(metrics)  # the last micro-step's: MultiSteps applied the update there
        loss = np.sum(jax.device_get(losses))
        finite = bool(np.isfinite(loss) and np.isfinite(metrics.grad_norm))
        if not finite:
            self.state = state_before_skipped_window(before, self.state)
        return Dispatched(self.state, metrics._replace(loss=loss, finite=finite))

    def read(self, handle: Dispatched) -> StepResult:
        m = jax.device_get(handle.metrics)
        outcome = "nonfinite" if not m.finite else "overflow" if m.overflow else "applied"
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
            self.state = set_learning_rate(self.state, *self.schedule_value(epochs_done))

    def export_weights(self) -> dict[str, np.ndarray]:
        return export_weights(variables_of(self.state))

    def any_replica_interrupted(self, signum: Optional[int]) -> Optional[int]:
        return signum  # one process drives every replica

    def export_state(self, handle: Optional[Dispatched]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state after `handle`'s update (a later update may already be dispatched)."""
        state = jax.device_get(self.state if handle is None else handle.state)
        inject = hyperparams_state(state.opt_state)
        tensors = {f"model.{name}": value for name, value in export_weights(variables_of(state)).items()}
        applied = int(inject.count)  # applied updates (state.step counts optax.MultiSteps' micro-steps)
        if applied > 0:  # before the first update the optimizer holds only its initial values
            optimizer = export_optimizer(inject.inner_state)
            tensors.update({f"optimizer.{name}": value for name, value in optimizer.items()})
        tensors["rng.jax"] = np.asarray(state.dropout_key)
        # The doubles the next update uses (the state holds the last update's, rounded), so that a
        # resumed torch scheduler continues its recurrence exactly.
        if self.plateau is not None:
            lr, momentum = self.plateau.lr, None
        else:
            per_step = self.setup.plan.interval == "step"
            lr, momentum = self.schedule_value(applied if per_step else self.epochs_done)
        saved: dict[str, Any] = {
            "hyperparameters": {"lr": float(lr), "momentum": None if momentum is None else float(momentum)}
        }
        if self.plateau is not None:
            plateau = self.plateau
            saved["plateau"] = {
                "best": plateau.best,
                "num_bad_epochs": plateau.num_bad_epochs,
                "cooldown_counter": plateau.cooldown_counter,
            }
        if state.loss_scale is not None:
            saved["loss_scale"] = {
                "scale": float(state.loss_scale.scale),
                "growth_tracker": int(state.loss_scale.growth_tracker),
            }
        return tensors, saved

    def import_state(self, checkpoint: Checkpoint) -> None:
        position, saved, state = checkpoint.state["position"], checkpoint.state, self.state
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
            windows = (position["epoch"] - 1) * self.setup.plan.updates_per_epoch + position["window"]
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
        self.state = state.replace(
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            opt_state=opt_state,
            step=jnp.asarray(steps, state.step.dtype),
            forward_passes=jnp.asarray(position["forward_passes"], jnp.int32),
            loss_scale=loss_scale,
            dropout_key=dropout_key,
        )
        self.state = replicate(self.state, self.mesh)
        self.epochs_done = position["epoch"] - 1
        if self.plateau is not None:
            for key, value in saved["plateau"].items():
                setattr(self.plateau, key, value)
            self.plateau.lr = hyper["lr"]


fit = backend_fit(JaxBackend)

if __name__ == "__main__":
    raise SystemExit(run_cli("python -m flaxloop.train", "jax", fit))
