"""Optax optimizers that perform torch.optim's exact updates, built as one optax.chain.

Where an optax transformation already computes torch's update it is used as is; the three
written here are where optax's arithmetic differs (see ../shared/PARITY_FACTS.md).
The learning rate is injected into the optimizer state (optax.inject_hyperparams), so
the loop can change it between steps and it is saved with the state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxloop.schedules import make_schedule
from loopspec.batching import batches_per_epoch
from loopspec.config import OptimizerConfig, resolved_eps, resolved_weight_decay
from loopspec.run import RunSetup


class DampenedTraceState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax states do; never called
    trace: Any


def dampened_trace(momentum: float, dampening: float) -> optax.GradientTransformation:
    """torch SGD momentum with dampening: buf = g on the first step, then m*buf + (1-d)*g.

    optax.trace has no dampening, and dampening on the first step would differ from torch.
    """

    def init_fn(params: Any) -> DampenedTraceState:
        return DampenedTraceState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates: Any, state: DampenedTraceState, params: Any = None) -> tuple[Any, DampenedTraceState]:
        first = state.count == 0
        trace = jax.tree.map(lambda g, b: jnp.where(first, g, momentum * b + (1 - dampening) * g), updates, state.trace)
        return trace, DampenedTraceState(state.count + 1, trace)

    return optax.GradientTransformation(init_fn, update_fn)


def bias_correction(decay: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """1 - decay**count, accurate in float32: -expm1(count * log(decay)).

    torch evaluates Adam's bias corrections in Python floats (double) and rounds once.
    optax.scale_by_adam evaluates 1 - decay**count in float32, where 1 - 0.999f**1 cancels
    to 0.00099998713: 1.3e-5 off, which moves every early update's denominator by 6e-6,
    far beyond float32 rounding (and the first cause of float32 drift between the backends).
    """
    steps = count.astype(dtype)
    if isinstance(decay, (int, float)):
        return jnp.ones([], dtype) if decay == 0 else -jnp.expm1(steps * math.log(decay))
    decay = jnp.asarray(decay, dtype)  # a cycled beta1 (OneCycle), injected into the state
    return jnp.where(decay == 0, 1.0, -jnp.expm1(steps * jnp.log(decay)))


def adam_denominator(nu: jax.Array, bias2_sqrt: jax.Array, eps: float) -> jax.Array:
    """torch's sqrt(v) / sqrt(1 - b2^t) + eps: eps outside the square root."""
    return jnp.sqrt(nu) / bias2_sqrt + eps


class AdamState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax states do; never called
    mu: Any
    nu: Any
    nu_max: Any  # AMSGrad's running maximum of nu; None without AMSGrad


def scale_by_torch_adam(b1: Any, b2: float, eps: float, amsgrad: bool = False) -> optax.GradientTransformation:
    """torch's Adam direction m_hat / (sqrt(v_hat) + eps), with accurate bias corrections.

    optax.scale_by_adam computes the same in exact arithmetic but loses 1e-5 in float32
    (bias_correction above). With amsgrad, torch takes the max of the raw second moments and
    bias-corrects afterwards; optax.scale_by_amsgrad takes the max of the corrected ones.
    """

    def init_fn(params: Any) -> AdamState:
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return AdamState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros() if amsgrad else None)

    def update_fn(updates: Any, state: AdamState, params: Any = None) -> tuple[Any, AdamState]:
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        dtype = optax.tree.dtype(updates, "highest")
        bias1, bias2_sqrt = bias_correction(b1, count, dtype), jnp.sqrt(bias_correction(b2, count, dtype))
        out = jax.tree.map(
            lambda m, v: (m / bias1) / adam_denominator(v, bias2_sqrt, eps), mu, nu_max if amsgrad else nu
        )
        return out, AdamState(count, mu, nu, nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


class AdagradState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax states do; never called
    sum_of_squares: Any


def scale_by_torch_adagrad(
    initial_accumulator_value: float, eps: float, lr_decay: float
) -> optax.GradientTransformation:
    """torch's Adagrad: g / (sqrt(sum g^2) + eps), divided by 1 + (t-1) * lr_decay.

    optax.scale_by_rss puts eps inside the square root and starts the sum at 0.1.
    """

    def init_fn(params: Any) -> AdagradState:
        return AdagradState(
            jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        )

    def update_fn(updates: Any, state: AdagradState, params: Any = None) -> tuple[Any, AdagradState]:
        sums = jax.tree.map(lambda s, g: s + g * g, state.sum_of_squares, updates)
        decay = 1 + state.count.astype(jnp.result_type(float)) * lr_decay
        out = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps) / decay, updates, sums)
        return out, AdagradState(state.count + 1, sums)

    return optax.GradientTransformation(init_fn, update_fn)


class GradientStats(NamedTuple):
    global_norm: jax.Array  # of the gradient entering the optimizer, before clipping
    clipped: jax.Array


def record_gradient_stats(
    clip_grad_norm: Optional[float] = None, clip_grad_value: Optional[float] = None
) -> optax.GradientTransformation:
    """Keeps the global gradient norm (before clipping) and whether clipping acts, in the state.

    At the head of the chain it sees the gradient the optimizer uses: under optax.MultiSteps,
    the mean of the window's micro-batch gradients.
    """

    def init_fn(params: Any) -> GradientStats:
        return GradientStats(jnp.zeros([], optax.tree.dtype(params, "highest")), jnp.zeros([], bool))

    def update_fn(updates: Any, state: GradientStats, params: Any = None) -> tuple[Any, GradientStats]:
        norm = optax.tree.norm(updates)
        if clip_grad_norm is not None:
            clipped = clip_grad_norm / (norm + 1e-6) < 1.0
        elif clip_grad_value is not None:
            clipped = optax.tree.max(jax.tree.map(jnp.abs, updates)) > clip_grad_value
        else:
            clipped = jnp.zeros([], bool)
        return updates, GradientStats(norm.astype(state.global_norm.dtype), clipped)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_grad_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6)).

    optax.clip_by_global_norm divides by the norm itself, without the 1e-6.
    """

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        scale = jnp.minimum(max_norm / (optax.tree.norm(updates) + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def decayed_tensors(params: Any) -> Any:
    """Which tensors weight decay applies to, as optax's mask: with `decay: matrices` (nanoGPT) True
    for tensors of 2+ dimensions; biases and norms do not decay."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer_chain(
    cfg: OptimizerConfig,
    learning_rate: Any,
    momentum: Any = None,
    clip_grad_norm: Optional[float] = None,
    clip_grad_value: Optional[float] = None,
) -> optax.GradientTransformation:
    """The torch update for cfg.name as an optax.chain, ending in -learning_rate scaling.

    The gradient is measured and clipped first, as torch clips before optimizer.step().
    `momentum`, when given, replaces SGD/RMSprop momentum or Adam's beta1 (OneCycle cycles it).
    """
    head = [record_gradient_stats(clip_grad_norm, clip_grad_value)]
    if clip_grad_norm is not None:
        head.append(clip_grad_norm_torch(clip_grad_norm))
    if clip_grad_value is not None:
        head.append(optax.clip(clip_grad_value))
    weight_decay, eps = resolved_weight_decay(cfg), resolved_eps(cfg)
    cycled = momentum is not None
    momentum = momentum if cycled else cfg.momentum
    # torch adds L2 to the gradient for every optimizer except AdamW, which decays weights
    # after the Adam scaling (decoupled).
    mask = decayed_tensors if cfg.decay == "matrices" else None
    coupled = [optax.add_decayed_weights(weight_decay, mask)] if weight_decay and cfg.name != "adamw" else []
    if cfg.name == "sgd":
        if (cycled or cfg.momentum) and cfg.dampening:
            core = [dampened_trace(momentum, cfg.dampening)]
        elif cycled or cfg.momentum:
            core = [optax.trace(decay=momentum, nesterov=cfg.nesterov)]
        else:
            core = []
    elif cfg.name in ("adam", "adamw"):
        b1, b2 = (momentum if cycled else cfg.betas[0]), cfg.betas[1]
        core = [scale_by_torch_adam(b1, b2, eps, cfg.amsgrad)]
        if cfg.name == "adamw" and weight_decay:
            core.append(optax.add_decayed_weights(weight_decay, mask))
    elif cfg.name == "rmsprop":
        scale = optax.scale_by_stddev if cfg.centered else optax.scale_by_rms
        core = [scale(decay=cfg.alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False)]
        if cycled or cfg.momentum:
            core.append(optax.trace(decay=momentum))
    elif cfg.name == "adagrad":
        core = [scale_by_torch_adagrad(cfg.initial_accumulator_value, eps, cfg.lr_decay)]
    else:
        raise ValueError(f"unknown optimizer {cfg.name}")
    return optax.chain(*head, *coupled, *core, optax.scale_by_learning_rate(learning_rate))


def make_optimizer(
    cfg: OptimizerConfig,
    learning_rate: Any = None,
    momentum: Any = None,
    clip_grad_norm: Optional[float] = None,
    clip_grad_value: Optional[float] = None,
) -> optax.GradientTransformation:
    """The optimizer with its learning rate (and a cycled momentum) held in the state as
    `hyperparams['learning_rate']` (`['momentum']`): a constant, or a schedule of the update count."""
    learning_rate = cfg.lr if learning_rate is None else learning_rate
    clip = {"clip_grad_norm": clip_grad_norm, "clip_grad_value": clip_grad_value}
    if momentum is None:
        return optax.inject_hyperparams(lambda learning_rate: optimizer_chain(cfg, learning_rate, None, **clip))(
            learning_rate=learning_rate
        )

    def factory(learning_rate: Any, momentum: Any) -> optax.GradientTransformation:
        return optimizer_chain(cfg, learning_rate, momentum, **clip)

    return optax.inject_hyperparams(factory)(learning_rate=learning_rate, momentum=momentum)


def accumulate(
    tx: optax.GradientTransformation, accumulation_steps: int, batches_per_epoch: int, dtype: Any
) -> optax.MultiSteps:
    """optax.MultiSteps averaging `accumulation_steps` micro-batch gradients per update.

    An epoch's trailing partial window is its own update over the micro-batches it has
    (as the torch loop does): every_k_schedule gives the epoch's last update that many.
    The inner optimizer, and so the schedule, advances once per applied update.
    """
    per_epoch = -(-batches_per_epoch // accumulation_steps)
    trailing = batches_per_epoch % accumulation_steps

    def every_k(update: jax.Array) -> jax.Array:
        last_of_epoch = update % per_epoch == per_epoch - 1
        return jnp.where(last_of_epoch & (trailing > 0), trailing, accumulation_steps)

    return optax.MultiSteps(tx, every_k_schedule=every_k, use_grad_mean=True, accumulator_dtype=dtype)


def make_tx(setup: RunSetup, dtype: Any) -> optax.GradientTransformation:
    """The run's whole optimizer: its schedules injected, clipping, and optax.MultiSteps when it accumulates."""
    config, train = setup.config, setup.config.train
    learning_rate, momentum = make_schedule(
        config.schedule, setup.plan, setup.schedule_horizon, config.optimizer.lr, dtype
    )
    tx = make_optimizer(config.optimizer, learning_rate, momentum, train.clip_grad_norm, train.clip_grad_value)
    if train.accumulation == "multisteps" and train.accumulation_steps > 1:
        batches = batches_per_epoch(len(setup.dataset.y_train), config.data.batch_size, config.data.drop_last)
        tx = accumulate(tx, train.accumulation_steps, batches, dtype)
    return tx
