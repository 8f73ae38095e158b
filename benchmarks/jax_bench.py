"""The JAX half of benchmarks.throughput (run in its own process by that module).

Modes: `jit` (flaxloop.train.train_step jitted, one call per batch, reading each update's
metrics back after dispatching the next, as the training loop does) and `fused` (K of those steps in one
compiled program, lax.scan over batches already on the device); each with a `bare_` twin:
a hand-written jitted step on the same Flax module with optax's stock optimizer and loss
(flax's DynamicScale for fp16), no library code around it.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, ContextManager, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import dynamic_scale

import flaxloop.train as flax_train
from benchmarks.timing import Timed, interleaved_repeats, timed_rows
from benchmarks.workloads import workload_batches, workload_config
from flaxloop.losses import make_loss
from flaxloop.optim import decayed_tensors
from flaxloop.precision import compute_dtype, param_dtype, precision_scope, resolve_device
from loopspec.config import Config, resolved_eps, resolved_weight_decay
from loopspec.run import plan_run

MODES = ("bare_jit", "jit", "bare_fused", "fused")


def stock_optimizer(config: Config) -> optax.GradientTransformation:
    opt = config.optimizer
    if opt.name == "adamw":
        mask = decayed_tensors if opt.decay == "matrices" else None
        return optax.adamw(
            opt.lr, *opt.betas, eps=resolved_eps(opt), weight_decay=resolved_weight_decay(opt), mask=mask
        )
    if opt.name == "sgd":
        return optax.sgd(opt.lr, momentum=opt.momentum or None)
    raise ValueError(f"no bare baseline for {opt.name}")


def stock_loss(config: Config) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if config.loss.name == "focal":
        return lambda logits, y: optax.sigmoid_focal_loss(logits, y[:, None].astype(logits.dtype)).mean()
    return lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def bare_step_fn(state: flax_train.TrainState, config: Config) -> tuple[Callable, Any]:
    """The shortest jitted step of the same math: (carry, batch) -> carry."""
    tx, loss, fp16 = stock_optimizer(config), stock_loss(config), config.train.precision == "fp16"

    def step(carry: tuple, batch: tuple) -> tuple:
        params, stats, opt_state, scaler = carry
        x, y = batch

        def loss_fn(p: Any) -> tuple[jax.Array, Any]:
            logits, new_stats = state.apply_fn({"params": p, "batch_stats": stats}, x, True)
            return loss(logits.astype(jnp.float32), y), new_stats

        if fp16:
            scaler, finite, (_, stats), grads = scaler.value_and_grad(loss_fn, has_aux=True)(params)
        else:
            (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if fp16:  # keep the old weights on overflow
            new_params, new_opt_state = jax.tree.map(
                lambda n, o: jnp.where(finite, n, o), (new_params, new_opt_state), (params, opt_state)
            )
        return new_params, stats, new_opt_state, scaler

    carry = (state.params, state.batch_stats, tx.init(state.params), dynamic_scale.DynamicScale() if fp16 else None)
    return step, carry


def prepare(
    model_name: str,
    batch_size: int,
    precision: str,
    device_name: str,
    modes: list[str],
    steps: int,
    warmup: int,
    fused_unroll: int = 0,
    width: Optional[int] = None,
) -> dict[str, Timed]:
    """Every mode built on the workload's batches (on the device) and warmed up, ready to time.
    Call it, and time its steps, inside scope(precision, device_name): jit's cache is keyed by the
    scope's device and matmul precision, so a step called outside it would compile again.

    fused_unroll 0 picks: a rolled scan runs XLA:CPU's convolutions about 12x slower (CNN,
    batch 32: 637 against 53 ms a step), so the CNN's K steps are unrolled on CPU; the MLPs'
    are not: unrolled, they measured slower (MLP, batch 32: 310 against 186 us a step)."""
    config = workload_config(model_name, batch_size, precision, device_name, width)
    device = resolve_device(device_name)
    # planned, not claimed: nothing is written, so benchmarks running side by side do not contend for a directory
    setup = plan_run(config, "runs/benchmarks", None, backend="jax")
    dtype = param_dtype(precision)
    fused_k = min(steps, 16)
    x, y, out_dim, _ = workload_batches(config, fused_k)
    xs, ys = jax.device_put(x if x.dtype.kind == "i" else x.astype(dtype)), jax.device_put(y)
    singles = [({"tail": {"x": xs[i], "y": ys[i]}}, (xs[i], ys[i])) for i in range(fused_k)]
    loss_fn = make_loss(config.loss, max(out_dim, 2), out_dim)
    library = functools.partial(flax_train.train_step, loss_fn=loss_fn)
    unroll = fused_unroll or (fused_k if device.platform == "cpu" and model_name == "cnn" else 1)
    timed = {}
    for mode in modes:
        state = flax_train.JaxBackend(setup).state
        bare, carry = bare_step_fn(state, config)
        box: dict[str, Any] = {"state": state, "carry": carry}
        if mode == "jit":
            step_fn = jax.jit(library)

            def step(i: int, box: dict = box, step_fn: Callable = step_fn) -> None:
                box["state"], out = step_fn(box["state"], singles[i % fused_k][0])
                if "out" in box:  # the training loop's read-back, one update late
                    jax.device_get(box["out"])
                box["out"] = out
        elif mode == "bare_jit":
            bare_fn = jax.jit(bare)

            def step(i: int, box: dict = box, bare_fn: Callable = bare_fn) -> None:
                box["carry"] = bare_fn(box["carry"], singles[i % fused_k][1])
        elif mode == "fused":
            fused_fn = jax.jit(
                lambda s, xb, yb: jax.lax.scan(
                    lambda c, b: library(c, {"tail": {"x": b[0], "y": b[1]}}), s, (xb, yb), unroll=unroll
                )
            )

            def step(i: int, box: dict = box, fused_fn: Callable = fused_fn) -> None:
                box["state"], _ = fused_fn(box["state"], xs, ys)
        elif mode == "bare_fused":
            bare_fused_fn = jax.jit(
                lambda c, xb, yb, bare=bare: jax.lax.scan(lambda c, b: (bare(c, b), None), c, (xb, yb), unroll=unroll)[
                    0
                ]
            )

            def step(i: int, box: dict = box, bare_fused_fn: Callable = bare_fused_fn) -> None:
                box["carry"] = bare_fused_fn(box["carry"], xs, ys)
        else:
            raise ValueError(mode)
        calls, per_call = (max(1, steps // fused_k), fused_k) if "fused" in mode else (steps, 1)
        sync = functools.partial(lambda box: jax.block_until_ready((box["state"], box["carry"])), box)
        started = time.perf_counter()
        for i in range(max(1, warmup // per_call)):
            step(i)
        sync()
        seconds = time.perf_counter() - started
        # XLA keeps one process-wide peak (no reset): the peak so far, after this mode's warm-up
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
        timed[mode] = Timed(step, sync, calls, per_call, seconds, None if peak is None else peak / 2**20)
    return timed


def run(
    model_name: str,
    batch_size: int,
    precision: str,
    device_name: str,
    modes: list[str],
    steps: int,
    warmup: int,
    repeats: int,
    fused_unroll: int = 0,
    width: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Every mode prepared, then timed in interleaved repeats: one row per mode."""
    with scope(precision, device_name):
        timed = prepare(model_name, batch_size, precision, device_name, modes, steps, warmup, fused_unroll, width)
        return timed_rows("jax", timed, interleaved_repeats(timed, repeats))


def scope(precision: str, device_name: str) -> ContextManager[Any]:
    """What prepared steps must be timed inside: the precision scope (the workloads leave tf32 off)."""
    return precision_scope(precision, device_name)


def peak_flops(precision: str, device_name: str, size: int = 2048) -> float:
    with precision_scope(precision, device_name):
        dtype = compute_dtype(precision)
        a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype)
        matmul = jax.jit(lambda a: a @ a)
        jax.block_until_ready(matmul(a))
        reps = 3 if jax.default_backend() == "cpu" else 20
        start = time.perf_counter()
        for _ in range(reps):
            out = matmul(a)
        jax.block_until_ready(out)
        return 2.0 * size**3 * reps / (time.perf_counter() - start)


def version() -> str:
    return f"jax {jax.__version__}"


def device_label(device_name: str) -> str:
    with precision_scope("fp32", device_name) as device:
        return device.device_kind
