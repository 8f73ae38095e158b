"""The JAX training loop: `python -m flaxloop.train --config FILE --out DIR`.

A functional core as in the Flax examples: a TrainState pytree, `train_step(state, window)
-> (state, metrics)` as a pure function under jax.jit, the optimizer one optax.chain (in
optax.MultiSteps when it accumulates). The host loop around it mirrors torchloop/train.py
line for line, with everything framework-neutral coming from loopspec.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from flaxloop.checkpoint import export_weights, import_weights
from flaxloop.losses import LossFn, make_loss
from flaxloop.models import build_model
from flaxloop.optim import accumulate, make_optimizer
from flaxloop.precision import LossScale, compute_dtype, param_dtype, precision_scope
from flaxloop.schedules import ReduceLROnPlateau, epoch_values, make_schedules
from loopspec.batching import batches_per_epoch, eval_batches, train_batches, update_windows
from loopspec.config import Config
from loopspec.run import RunRecorder, RunSetup, monitored_value, prepare_run, validation_metrics


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_key: jax.Array
    forward_passes: jax.Array  # training forward passes so far: each draws its own dropout key
    loss_scale: Optional[LossScale] = None  # fp16 only


def create_train_state(setup: RunSetup, tx: optax.GradientTransformation, dtype: Any) -> TrainState:
    """`dtype` holds the weights; the model computes in the precision's compute dtype."""
    config = setup.config
    model = build_model(config.model, setup.dataset.input_shape, setup.out_dim,
                        compute_dtype(config.train.precision), dtype)
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
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx, dropout_key=dropout_key,
                                 forward_passes=jnp.zeros([], jnp.int32), loss_scale=loss_scale)

    return create(variables)


def make_tx(setup: RunSetup, dtype: Any) -> optax.GradientTransformation:
    config, train = setup.config, setup.config.train
    learning_rate, momentum = make_schedules(config.schedule, setup.plan, setup.schedule_length, config.optimizer.lr)
    tx = make_optimizer(config.optimizer, learning_rate, momentum, train.clip_grad_norm, train.clip_grad_value)
    if train.accumulation == "multisteps" and train.accumulation_steps > 1:
        batches = batches_per_epoch(len(setup.dataset.y_train), config.data.batch_size, config.data.drop_last)
        tx = accumulate(tx, train.accumulation_steps, batches, dtype)
    return tx


def variables_of(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def injected(opt_state: Any) -> Any:
    """The optax.inject_hyperparams state, under optax.MultiSteps or not."""
    return opt_state.inner_opt_state if isinstance(opt_state, optax.MultiStepsState) else opt_state


def set_learning_rate(state: TrainState, lr: float, momentum: Optional[float] = None) -> TrainState:
    """Write a new learning rate (and cycled momentum) into the optimizer state, between epochs."""
    inner = injected(state.opt_state)
    values = {"learning_rate": lr} if momentum is None else {"learning_rate": lr, "momentum": momentum}
    hyperparams = {**inner.hyperparams, **{k: jnp.asarray(v, inner.hyperparams[k].dtype) for k, v in values.items()}}
    inner = inner._replace(hyperparams=hyperparams)
    if isinstance(state.opt_state, optax.MultiStepsState):
        return state.replace(opt_state=state.opt_state._replace(inner_opt_state=inner))
    return state.replace(opt_state=inner)


def micro_gradients(state: TrainState, batch_stats: Any, forward_pass: jax.Array, micro: dict[str, Any],
                    scale: float, loss_fn: LossFn) -> tuple[jax.Array, Any, Any]:
    """Loss * scale, the gradient of that times the fp16 loss scale, and the BatchNorm
    statistics after one micro-batch. The loss is computed in the weights' float dtype."""
    dropout_key = jax.random.fold_in(state.dropout_key, forward_pass)
    loss_scale = 1.0 if state.loss_scale is None else state.loss_scale.scale

    def compute_loss(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats}, micro["x"], train=True,
            dropout_masks=micro.get("dropout_masks"), rngs={"dropout": dropout_key}, mutable=["batch_stats"],
        )
        loss = loss_fn(logits.astype(jax.tree.leaves(params)[0].dtype), micro["y"]) * scale
        return loss * loss_scale, (loss, updates.get("batch_stats", batch_stats))

    (_, (loss, new_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    return loss, grads, new_stats


def step_metrics(state: TrainState, loss: jax.Array, loss_scale: Optional[LossScale] = None,
                 overflow: Any = False) -> dict[str, jax.Array]:
    """What the update used and measured, read back from the optimizer state. With fp16,
    a gradient overflow is the loss scaler's to handle; only a non-finite loss is not finite."""
    stats = optax.tree.get(state.opt_state, "global_norm"), optax.tree.get(state.opt_state, "clipped")
    hyperparams = injected(state.opt_state).hyperparams
    finite = jnp.isfinite(loss) if loss_scale is not None else jnp.isfinite(loss) & jnp.isfinite(stats[0])
    return {"loss": loss, "grad_norm": stats[0], "clipped": stats[1], "lr": hyperparams["learning_rate"],
            "momentum": hyperparams.get("momentum"), "finite": finite, "overflow": overflow,
            "loss_scale": None if loss_scale is None else loss_scale.scale}


def train_step(state: TrainState, window: dict[str, Any], loss_fn: LossFn) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update from the mean gradient of a window of micro-batches.

    window["stack"] holds equal-sized micro-batches stacked on a leading axis (scanned);
    window["tail"] a last micro-batch of another size (the epoch's short batch). Without
    accumulation the window is just a tail. An update that is not finite (or overflows
    fp16) is skipped here, in the step; metrics["finite"] and ["overflow"] say so.
    """
    stack, tail = window.get("stack"), window.get("tail")
    count = (0 if stack is None else stack["y"].shape[0]) + (0 if tail is None else 1)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    loss_dtype = jax.tree.leaves(state.params)[0].dtype
    carry = (zeros, jnp.zeros([], loss_dtype), state.batch_stats, state.forward_passes)

    def accumulate_micro(carry: tuple, micro: dict[str, Any]) -> tuple[tuple, None]:
        grad_sum, loss_sum, batch_stats, passes = carry
        loss, grads, batch_stats = micro_gradients(state, batch_stats, passes, micro, 1.0 / count, loss_fn)
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
    # The guard runs inside the step, so the host can read the flags an update late without waiting.
    # A skipped update keeps the weights, optimizer state and step count (GradScaler.step skips on
    # overflow); a non-finite one also undoes the window's BatchNorm statistics, which an fp16
    # overflow keeps, as in torch. Forward passes (dropout keys) and the loss scale move on.
    undo_update, undo_stats = overflow | ~metrics["finite"], ~metrics["finite"]
    kept = lambda undo, old, new: jax.tree.map(lambda o, n: jnp.where(undo, o, n), old, new)  # noqa: E731
    new_state = stepped.replace(
        params=kept(undo_update, state.params, stepped.params),
        opt_state=kept(undo_update, state.opt_state, stepped.opt_state),
        step=kept(undo_update, state.step, stepped.step),
        batch_stats=kept(undo_stats, state.batch_stats, stepped.batch_stats),
        loss_scale=None if scaler is None else scaler.update(overflow))
    return new_state, metrics


def multisteps_micro_step(state: TrainState, micro: dict[str, Any], scale: float,
                          loss_fn: LossFn) -> tuple[TrainState, dict[str, jax.Array]]:
    """One micro-batch under optax.MultiSteps: it accumulates, and applies on the window's last."""
    loss, grads, batch_stats = micro_gradients(state, state.batch_stats, state.forward_passes, micro, 1.0, loss_fn)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats, forward_passes=state.forward_passes + 1)
    return state, step_metrics(state, loss * scale)


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, loss_fn: LossFn) -> tuple[jax.Array, jax.Array]:
    logits = state.apply_fn(variables_of(state), x, train=False).astype(x.dtype)  # the loss in the weights' dtype
    return logits, loss_fn(logits, y)


def evaluate(eval_fn: Any, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int,
             num_classes: int) -> dict[str, float]:
    loss_sum, outputs = 0.0, []
    for rows in eval_batches(len(y), batch_size):
        logits, loss = eval_fn(state, jnp.asarray(x[rows]), jnp.asarray(y[rows]))
        loss_sum += float(loss) * len(y[rows])
        outputs.append(np.asarray(logits, dtype=np.float64))
    return validation_metrics(loss_sum, np.concatenate(outputs), y, num_classes)


def micro_batch(setup: RunSetup, x: np.ndarray, rows: np.ndarray, forward_pass: int, dtype: Any) -> dict[str, Any]:
    micro = {"x": x[rows], "y": setup.dataset.y_train[rows]}
    masks = setup.dropout_masks(forward_pass, len(rows))
    if masks is not None:
        micro["dropout_masks"] = [m.astype(dtype) for m in masks]
    return micro


def stack_window(micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Equal-sized micro-batches stacked for lax.scan; a differently sized last one as the tail."""
    if len(micro_batches) == 1:
        return {"tail": micro_batches[0]}
    equal = len(micro_batches[-1]["y"]) == len(micro_batches[0]["y"])
    stacked = micro_batches if equal else micro_batches[:-1]
    window = {"stack": jax.tree.map(lambda *leaves: np.stack(leaves), *stacked)}
    if not equal:
        window["tail"] = micro_batches[-1]
    return window


class Update(NamedTuple):
    """A dispatched update: its batches' rows, the state after it, its metrics on the device."""
    window: list[np.ndarray]
    state: TrainState
    out: dict[str, Any]


def fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train as configured; writes config.json, metrics.jsonl, init/final.safetensors to out_dir."""
    with precision_scope(config.train.precision, config.train.device, config.train.tf32):
        return _fit(config, out_dir, init_path)


def _fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path]) -> dict[str, Any]:
    setup = prepare_run(config, out_dir, init_path, backend="jax")
    dtype = param_dtype(config.train.precision)
    data, train_cfg = setup.dataset, config.train
    x_train, x_val = data.x_train.astype(dtype), data.x_val.astype(dtype)

    state = create_train_state(setup, make_tx(setup, dtype), dtype)
    loss_fn = make_loss(config.loss, data.num_classes, setup.out_dim)
    multisteps = train_cfg.accumulation == "multisteps" and train_cfg.accumulation_steps > 1
    step_fn = jax.jit(functools.partial(train_step, loss_fn=loss_fn))
    micro_fn = jax.jit(functools.partial(multisteps_micro_step, loss_fn=loss_fn), static_argnames="scale")
    eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))
    plateau = ReduceLROnPlateau(config.schedule, config.optimizer.lr) if config.schedule.name == "plateau" else None
    epoch_schedule = setup.plan.interval == "epoch" and config.schedule.name != "none"

    recorder = RunRecorder(setup)
    recorder.save_initial_weights(export_weights(variables_of(state)))
    step, forward_pass, best_weights = 0, 0, None

    def settle(epoch: int, step: int, update: Update) -> int:
        """Read an update's metrics back and record it; returns the count of applied updates."""
        out = jax.device_get(update.out)
        if out["finite"] and out["overflow"]:  # fp16: the scaler skipped the update and backed off
            recorder.overflow_skip(epoch, step, float(out["lr"]), float(out["loss_scale"]))
        elif not out["finite"]:  # the step kept the weights; stop here or go on from them
            bad_inputs = any(not np.isfinite(data.x_train[rows]).all() for rows in update.window)
            recorder.nonfinite_update(epoch, step, float(out["lr"]), float(out["loss"]), float(out["grad_norm"]),
                                      bad_inputs, lambda: export_weights(variables_of(update.state)))
        else:
            step += 1
            recorder.record_update(epoch, step, setup.step_values(out))
        return step

    try:
        for epoch in range(1, train_cfg.epochs + 1):
            batches = train_batches(len(data.y_train), config.data.batch_size, config.seed, epoch,
                                    config.data.shuffle, config.data.drop_last)
            pending: Optional[Update] = None  # dispatched; read back after the next is dispatched
            for window in update_windows(batches, train_cfg.accumulation_steps):
                micro_batches = [micro_batch(setup, x_train, rows, forward_pass + i, dtype) for i, rows in enumerate(window)]
                forward_pass += len(window)
                if multisteps:
                    before, losses = state, []
                    for micro in micro_batches:
                        state, out = micro_fn(state, micro, scale=1.0 / len(window))
                        losses.append(out["loss"])
                    out = jax.device_get(out)  # the last micro-step's: MultiSteps applied the update there
                    out["loss"] = float(np.sum(jax.device_get(losses)))
                    out["finite"] = bool(np.isfinite(out["loss"]) and np.isfinite(out["grad_norm"]))
                    if not out["finite"]:  # MultiSteps has no in-step guard: undo on the host
                        state = keep_position(before, state)
                else:
                    state, out = step_fn(state, stack_window(micro_batches))
                if pending is not None:
                    step = settle(epoch, step, pending)
                    if recorder.reached_max_steps(step):
                        state, pending = pending.state, None  # drop the update dispatched past the end
                        break
                pending = Update(window, state, out)
            if pending is not None:
                step = settle(epoch, step, pending)
            val = evaluate(eval_fn, state, x_val, data.y_val, config.data.eval_batch_size, data.num_classes)
            improved = recorder.record_epoch(epoch, step, val)
            if plateau is not None:
                state = set_learning_rate(state, plateau.step(monitored_value(config.schedule.monitor, recorder.train_loss, val)))
            elif epoch_schedule:
                state = set_learning_rate(state, *epoch_values(config.schedule, setup.schedule_length, config.optimizer.lr, epoch))
            if improved and recorder.keep_best_weights:
                best_weights = export_weights(variables_of(state))
            if recorder.should_stop or recorder.reached_max_steps(step):
                break
        restored = best_weights is not None
        return recorder.finish(best_weights if restored else export_weights(variables_of(state)), step, restored)
    finally:
        recorder.close()


def keep_position(before: TrainState, after: TrainState) -> TrainState:
    """The state before a skipped update, with the counters that say where the run is:
    forward passes (dropout keys), the fp16 loss scale (which saw the failure, as torch's
    GradScaler does) and optax.MultiSteps' window count (its trailing-window rule)."""
    state = before.replace(forward_passes=after.forward_passes, loss_scale=after.loss_scale)
    if isinstance(after.opt_state, optax.MultiStepsState):
        state = state.replace(opt_state=before.opt_state._replace(gradient_step=after.opt_state.gradient_step))
    return state


if __name__ == "__main__":
    from flaxloop.cli import main

    raise SystemExit(main())
