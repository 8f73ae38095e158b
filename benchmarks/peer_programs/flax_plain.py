"""A plain Flax loop in the style of the Flax examples (examples/mnist, imagenet): linen modules, a
TrainState (with batch_stats) from flax.training, a jitted `train_step(state, batch) -> (state,
metrics)` with the dropout key folded from the step count, an optax optimizer and schedule, NumPy
batches indexed on the host, and the epoch's metrics fetched once at its end. Batches in the
library's seeded order; images as NHWC, the Flax examples' layout (transposed once, on load).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from benchmarks.peer_programs.common import EpochClock, Workload, epoch_rows, load_workload, parse_args
from loopspec.batching import eval_batches
from loopspec.config import resolved_eps, resolved_weight_decay


class MLP(nn.Module):
    hidden: Sequence[int]
    out_dim: int
    dropout: float
    momentum: float
    eps: float
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width, use_bias=self.bias)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=1 - self.momentum, epsilon=self.eps)(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
        return nn.Dense(self.out_dim)(x)


class CNN(nn.Module):
    channels: Sequence[int]
    out_dim: int
    momentum: float
    eps: float
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for channels in self.channels:
            x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=self.bias)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=1 - self.momentum, epsilon=self.eps)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        return nn.Dense(self.out_dim)(x.reshape(x.shape[0], -1))


class Block(nn.Module):
    """nanoGPT's pre-LayerNorm block: one qkv projection, causal attention with dropout on its weights."""

    width: int
    heads: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        batch, length, width = x.shape
        q, k, v = jnp.split(nn.Dense(3 * width)(nn.LayerNorm(epsilon=1e-5)(x)), 3, axis=-1)
        q, k, v = (t.reshape(batch, length, self.heads, width // self.heads).transpose(0, 2, 1, 3) for t in (q, k, v))
        scores = jnp.where(jnp.tril(jnp.ones((length, length), bool)), q @ k.transpose(0, 1, 3, 2), -jnp.inf)
        weights = nn.Dropout(self.dropout, deterministic=not train)(jax.nn.softmax(scores / math.sqrt(q.shape[-1])))
        y = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(nn.Dense(width)(y))
        h = nn.Dense(width)(nn.gelu(nn.Dense(4 * width)(nn.LayerNorm(epsilon=1e-5)(x)), approximate=False))
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class GPT(nn.Module):
    vocab: int
    block: int
    layers: int
    heads: int
    width: int
    dropout: float

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
        wte = nn.Embed(self.vocab, self.width)
        x = wte(tokens) + nn.Embed(self.block, self.width)(jnp.arange(tokens.shape[1]))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for _ in range(self.layers):
            x = Block(self.width, self.heads, self.dropout)(x, train)
        return wte.attend(nn.LayerNorm(epsilon=1e-5)(x))  # the head tied to the token table


def build_model(w: Workload) -> nn.Module:
    m = w.config.model
    if m.name == "mlp":
        return MLP(m.hidden, w.out_dim, m.dropout, m.batchnorm_momentum, m.batchnorm_eps, m.bias_before_norm)
    if m.name == "cnn":
        return CNN(m.channels, w.out_dim, m.batchnorm_momentum, m.batchnorm_eps, m.bias_before_norm)
    return GPT(w.out_dim, w.data.input_shape[0], m.n_layer, m.n_head, m.n_embd, m.dropout)


def loss_of(w: Workload) -> Callable[[jax.Array, jax.Array], jax.Array]:
    cfg = w.config.loss
    if cfg.name == "focal":
        return lambda logits, y: optax.sigmoid_focal_loss(
            logits, y[:, None].astype(logits.dtype), alpha=cfg.alpha, gamma=cfg.gamma
        ).mean()
    return lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_tx(w: Workload) -> optax.GradientTransformation:
    o, s = w.config.optimizer, w.config.schedule
    lr: Any = o.lr
    if s.name == "cosine":  # per epoch: the cosine of the epoch index the update falls in
        per_epoch = optax.cosine_decay_schedule(o.lr, w.schedule_horizon, alpha=s.eta_min / o.lr)
        lr = lambda count: per_epoch(count // w.updates_per_epoch)  # noqa: E731
    elif s.name == "warmup_cosine":
        lr = optax.warmup_cosine_decay_schedule(s.start_factor * o.lr, o.lr, s.warmup, w.schedule_horizon, s.eta_min)
    b1, b2 = o.betas
    if o.name == "adam":
        tx = optax.adam(lr, b1, b2, eps=resolved_eps(o))
    else:
        mask = (lambda p: jax.tree.map(lambda a: a.ndim >= 2, p)) if o.decay == "matrices" else None
        tx = optax.adamw(lr, b1, b2, eps=resolved_eps(o), weight_decay=resolved_weight_decay(o), mask=mask)
    clip = w.config.train.clip_grad_norm
    return tx if clip is None else optax.chain(optax.clip_by_global_norm(clip), tx)


class TrainState(train_state.TrainState):
    batch_stats: Any
    key: jax.Array


@functools.partial(jax.jit, static_argnames="loss_fn")
def train_step(state: TrainState, batch: dict[str, jax.Array], loss_fn: Callable) -> tuple[TrainState, dict]:
    dropout_key = jax.random.fold_in(state.key, state.step)

    def compute_loss(params: Any) -> tuple[jax.Array, Any]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["x"],
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        return loss_fn(logits, batch["y"]), updates

    (loss, updates), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    return state, {"loss": loss}


@functools.partial(jax.jit, static_argnames="loss_fn")
def eval_step(state: TrainState, batch: dict[str, jax.Array], loss_fn: Callable) -> dict[str, jax.Array]:
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch["x"], train=False)
    predicted = (logits[:, 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else logits.argmax(-1)
    return {"loss": loss_fn(logits, batch["y"]), "correct": (predicted == batch["y"]).sum()}


def arrays(w: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Inputs as the Flax examples hold them: float32 (token ids int32), images NHWC."""
    x_train, x_val = (x.astype(np.int32) if w.tokens else x.astype(np.float32) for x in (w.data.x_train, w.data.x_val))
    if x_train.ndim == 4:
        x_train, x_val = x_train.transpose(0, 2, 3, 1), x_val.transpose(0, 2, 3, 1)
    return x_train, x_val


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    w = load_workload(args)
    x_train, x_val = arrays(w)
    model, loss_fn = build_model(w), loss_of(w)
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(w.config.seed))
    variables = model.init(init_key, x_train[:2], train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=make_tx(w),
        key=dropout_key,
    )
    clock = EpochClock()
    y_train, y_val = w.data.y_train, w.data.y_val
    for epoch in range(1, w.config.train.epochs + 1):
        losses = []
        for rows in epoch_rows(w, epoch):
            state, metrics = train_step(state, {"x": x_train[rows], "y": y_train[rows]}, loss_fn)
            losses.append(metrics["loss"])
        train_loss = float(np.mean(jax.device_get(losses)))
        clock.train_done(len(losses))
        results = [
            (rows.stop - rows.start, eval_step(state, {"x": x_val[rows], "y": y_val[rows]}, loss_fn))
            for rows in eval_batches(len(y_val), w.config.data.eval_batch_size)
        ]
        results = jax.device_get(results)
        clock.epoch_done(sum(n * float(r["loss"]) for n, r in results) / len(y_val))
    device = jax.devices()[0].device_kind
    clock.write(args.result, f"jax {jax.__version__}, flax {flax.__version__}", device, train_loss=train_loss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
