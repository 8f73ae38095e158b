"""The JAX training loop: `python -m flaxloop.train --config FILE --out DIR`.

A functional core as in the Flax examples: a TrainState pytree, `train_step(state, batch)
-> (state, metrics)` as a pure function under jax.jit, the optimizer one optax.chain. The
host loop around it mirrors torchloop/train.py line for line, with everything
framework-neutral coming from loopspec.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from flaxloop.checkpoint import export_weights, import_weights
from flaxloop.losses import LossFn, make_loss
from flaxloop.models import build_model
from flaxloop.optim import make_optimizer
from flaxloop.precision import jax_dtype, precision_scope
from flaxloop.schedules import ReduceLROnPlateau, make_schedules
from loopspec.batching import eval_batches, train_batches
from loopspec.config import Config
from loopspec.run import RunRecorder, RunSetup, monitored_value, prepare_run, validation_metrics


class TrainState(train_state.TrainState):
    batch_stats: Any
    dropout_key: jax.Array


def create_train_state(setup: RunSetup, tx: optax.GradientTransformation, dtype: Any) -> TrainState:
    config = setup.config
    model = build_model(config.model, setup.dataset.input_shape, setup.out_dim, dtype)
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    sample = jnp.zeros((2, *setup.dataset.input_shape), dtype)
    init = functools.partial(model.init, train=False)
    if setup.initial_weights is None:
        variables = jax.jit(init)(init_key, sample)
    else:  # only the structure is needed: the values come from the canonical weights
        variables = import_weights(jax.eval_shape(init, init_key, sample), setup.initial_weights)

    @jax.jit
    def create(variables: dict[str, Any]) -> TrainState:  # jitted: optimizer-state init op by op is slow
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx, dropout_key=dropout_key)

    return create(variables)


def variables_of(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def set_learning_rate(state: TrainState, lr: float) -> TrainState:
    """Write a new learning rate into the optimizer state (ReduceLROnPlateau, between epochs)."""
    hyperparams = dict(state.opt_state.hyperparams)
    hyperparams["learning_rate"] = jnp.asarray(lr, dtype=hyperparams["learning_rate"].dtype)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


def train_step(state: TrainState, batch: dict[str, Any], loss_fn: LossFn) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update: forward, loss, gradient, gradient norm, optax update. Reports the
    learning rate (and momentum) the update used, which inject_hyperparams keeps in the state."""
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def compute_loss(params: Any) -> tuple[jax.Array, Any]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["x"], train=True,
            dropout_masks=batch.get("dropout_masks"), rngs={"dropout": dropout_key}, mutable=["batch_stats"],
        )
        return loss_fn(logits, batch["y"]), updates

    (loss, updates), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    used = {"lr": state.opt_state.hyperparams["learning_rate"], "momentum": state.opt_state.hyperparams.get("momentum")}
    return state, {"loss": loss, "grad_norm": grad_norm, **used}


def eval_step(state: TrainState, x: jax.Array, y: jax.Array, loss_fn: LossFn) -> tuple[jax.Array, jax.Array]:
    logits = state.apply_fn(variables_of(state), x, train=False)
    return logits, loss_fn(logits, y)


def evaluate(eval_fn: Any, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int,
             num_classes: int) -> dict[str, float]:
    loss_sum, outputs = 0.0, []
    for rows in eval_batches(len(y), batch_size):
        logits, loss = eval_fn(state, jnp.asarray(x[rows]), jnp.asarray(y[rows]))
        loss_sum += float(loss) * len(y[rows])
        outputs.append(np.asarray(logits, dtype=np.float64))
    return validation_metrics(loss_sum, np.concatenate(outputs), y, num_classes)


def fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train as configured; writes config.json, metrics.jsonl, init/final.safetensors to out_dir."""
    with precision_scope(config.train.dtype, config.train.device):
        return _fit(config, out_dir, init_path)


def _fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path]) -> dict[str, Any]:
    setup = prepare_run(config, out_dir, init_path, backend="jax")
    dtype = jax_dtype(config.train.dtype)
    data, train_cfg = setup.dataset, config.train
    x_train, x_val = data.x_train.astype(dtype), data.x_val.astype(dtype)

    learning_rate, momentum = make_schedules(config.schedule, setup.plan, setup.schedule_length, config.optimizer.lr)
    state = create_train_state(setup, make_optimizer(config.optimizer, learning_rate, momentum), dtype)
    plateau = ReduceLROnPlateau(config.schedule, config.optimizer.lr) if config.schedule.name == "plateau" else None
    loss_fn = make_loss(config.loss, data.num_classes, setup.out_dim)
    step_fn = jax.jit(functools.partial(train_step, loss_fn=loss_fn))
    eval_fn = jax.jit(functools.partial(eval_step, loss_fn=loss_fn))

    recorder = RunRecorder(setup)
    recorder.save_initial_weights(export_weights(variables_of(state)))
    step, forward_pass, best_weights = 0, 0, None
    try:
        for epoch in range(1, train_cfg.epochs + 1):
            first_step, outputs = step + 1, []
            for rows in train_batches(len(data.y_train), config.data.batch_size, config.seed, epoch,
                                      config.data.shuffle, config.data.drop_last):
                batch = {"x": jnp.asarray(x_train[rows]), "y": jnp.asarray(data.y_train[rows])}
                masks = setup.dropout_masks(forward_pass, len(rows))
                if masks is not None:
                    batch["dropout_masks"] = [jnp.asarray(m, dtype=dtype) for m in masks]
                forward_pass += 1
                state, out = step_fn(state, batch)
                step += 1
                outputs.append(out)
                if train_cfg.log_every and step % train_cfg.log_every == 0:
                    recorder.log_step(epoch, step, float(out["loss"]), float(out["lr"]), float(out["grad_norm"]))
                if train_cfg.max_steps is not None and step >= train_cfg.max_steps:
                    break
            fetched = jax.device_get(outputs)
            names = ("loss", "lr", "grad_norm", *(("momentum",) if setup.cycles_momentum else ()))
            columns = {name: [float(o[name]) for o in fetched] for name in names}
            recorder.record_steps(epoch, first_step, columns)
            val = evaluate(eval_fn, state, x_val, data.y_val, config.data.eval_batch_size, data.num_classes)
            train_loss = float(np.mean(columns["loss"]))
            improved = recorder.record_epoch(epoch, step, train_loss, val)
            if plateau is not None:
                state = set_learning_rate(state, plateau.step(monitored_value(config.schedule.monitor, train_loss, val)))
            if improved and recorder.keep_best_weights:
                best_weights = export_weights(variables_of(state))
            if recorder.should_stop or (train_cfg.max_steps is not None and step >= train_cfg.max_steps):
                break
        restored = best_weights is not None
        return recorder.finish(best_weights if restored else export_weights(variables_of(state)), step, restored)
    finally:
        recorder.close()


if __name__ == "__main__":
    from flaxloop.cli import main

    raise SystemExit(main())
