"""Keras 3 on JAX as its users write it: a Sequential model (a subclassed one for the GPT), compile
with the optimizer, loss and metric, and `model.fit` on NumPy arrays with validation_data; console
output off (verbose=0). The per-epoch cosine is a LearningRateScheduler callback, the warm-up cosine
Keras's CosineDecay with warm-up; the batches are Keras's own shuffle. Images NHWC, Keras's default.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported: the JAX peer

from typing import Any, Optional, Sequence  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from benchmarks.peer_programs.common import (  # noqa: E402
    EpochClock,
    Workload,
    cosine_per_epoch,
    load_workload,
    parse_args,
)
from loopspec.config import resolved_eps, resolved_weight_decay  # noqa: E402


class Block(layers.Layer):
    """Pre-LayerNorm: x + dropout(attention(ln_1(x))), then x + dropout(mlp(ln_2(x)))."""

    def __init__(self, width: int, heads: int, dropout: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.ln_1, self.ln_2 = layers.LayerNormalization(epsilon=1e-5), layers.LayerNormalization(epsilon=1e-5)
        self.attn = layers.MultiHeadAttention(heads, width // heads, dropout=dropout)
        self.fc = layers.Dense(4 * width, activation=lambda x: keras.activations.gelu(x, approximate=False))
        self.proj = layers.Dense(width)
        self.drop_1, self.drop_2 = layers.Dropout(dropout), layers.Dropout(dropout)

    def call(self, x: Any, training: bool = False) -> Any:
        h = self.ln_1(x)
        x = x + self.drop_1(self.attn(h, h, use_causal_mask=True, training=training), training=training)
        return x + self.drop_2(self.proj(self.fc(self.ln_2(x))), training=training)


class GPT(keras.Model):
    """Token and position embeddings, the blocks, a final LayerNorm, the head tied to the token table."""

    def __init__(self, vocab: int, block: int, n_layer: int, heads: int, width: int, dropout: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.wte, self.wpe = layers.Embedding(vocab, width), layers.Embedding(block, width)
        self.drop = layers.Dropout(dropout)
        self.blocks = [Block(width, heads, dropout) for _ in range(n_layer)]
        self.ln_f = layers.LayerNormalization(epsilon=1e-5)

    def call(self, tokens: Any, training: bool = False) -> Any:
        x = self.drop(self.wte(tokens) + self.wpe(ops.arange(ops.shape(tokens)[1])), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return ops.matmul(self.ln_f(x), ops.transpose(self.wte.embeddings))


def build_model(w: Workload) -> keras.Model:
    m, shape = w.config.model, w.data.input_shape
    momentum = 1 - m.batchnorm_momentum  # Keras keeps (1 - torch's momentum) of the old statistic
    if m.name == "mlp":
        stack: list[Any] = [keras.Input(shape)]
        for width in m.hidden:
            stack += [
                layers.Dense(width, use_bias=m.bias_before_norm),
                layers.BatchNormalization(momentum=momentum, epsilon=m.batchnorm_eps),
                layers.ReLU(),
                layers.Dropout(m.dropout),
            ]
        return keras.Sequential([*stack, layers.Dense(w.out_dim)])
    if m.name == "cnn":
        stack = [keras.Input((shape[1], shape[2], shape[0]))]
        for channels in m.channels:
            stack += [
                layers.Conv2D(channels, 3, padding="same", use_bias=m.bias_before_norm),
                layers.BatchNormalization(momentum=momentum, epsilon=m.batchnorm_eps),
                layers.ReLU(),
                layers.MaxPooling2D(2),
            ]
        return keras.Sequential([*stack, layers.Flatten(), layers.Dense(w.out_dim)])
    return GPT(w.out_dim, shape[0], m.n_layer, m.n_head, m.n_embd, m.dropout)


def learning_rate(w: Workload) -> Any:
    o, s = w.config.optimizer, w.config.schedule
    if s.name == "warmup_cosine":  # Keras's warm-up is linear from initial_learning_rate, as torch's LambdaLR
        return keras.optimizers.schedules.CosineDecay(
            s.start_factor * o.lr,
            w.schedule_horizon - s.warmup,
            alpha=s.eta_min / o.lr,
            warmup_target=o.lr,
            warmup_steps=s.warmup,
        )
    return o.lr


def make_optimizer(w: Workload) -> keras.optimizers.Optimizer:
    o = w.config.optimizer
    b1, b2 = o.betas
    common = {"beta_1": b1, "beta_2": b2, "epsilon": resolved_eps(o), "global_clipnorm": w.config.train.clip_grad_norm}
    if o.name == "adam":
        return keras.optimizers.Adam(learning_rate(w), **common)
    optimizer = keras.optimizers.AdamW(learning_rate(w), weight_decay=resolved_weight_decay(o), **common)
    if o.decay == "matrices":  # biases and LayerNorm scales and offsets: Keras's names for the 1-D tensors
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(w: Workload, model: keras.Model) -> None:
    cfg = w.config.loss
    if cfg.name == "focal":
        loss: Any = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=cfg.alpha, gamma=cfg.gamma, from_logits=True
        )
        metric: Any = keras.metrics.BinaryAccuracy(threshold=0.0)  # on logits
    else:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(from_logits=True), "accuracy"
    model.compile(optimizer=make_optimizer(w), loss=loss, metrics=[metric])


class Clock(keras.callbacks.Callback):
    """Epoch-level hooks only: a batch-level hook would make Keras fetch every step's logs."""

    def __init__(self, clock: EpochClock, updates: int):
        super().__init__()
        self.clock, self.updates = clock, updates

    def on_test_begin(self, logs: Any = None) -> None:
        # JAX dispatches asynchronously: wait for the weights the validation is about to read anyway
        jax.block_until_ready([v.value for v in self.model.trainable_variables])
        self.clock.train_done(self.updates)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.clock.epoch_done(logs["val_loss"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    w = load_workload(args)
    keras.utils.set_random_seed(w.config.seed)
    d = w.data
    x_train, x_val = (x.astype(np.int32) if w.tokens else x.astype(np.float32) for x in (d.x_train, d.x_val))
    if x_train.ndim == 4:
        x_train, x_val = x_train.transpose(0, 2, 3, 1), x_val.transpose(0, 2, 3, 1)
    y_train, y_val = d.y_train, d.y_val
    if w.out_dim == 1:  # one logit: float targets (N, 1)
        y_train, y_val = y_train[:, None].astype(np.float32), y_val[:, None].astype(np.float32)
    if w.config.data.drop_last:  # arrays have no drop_last: cut to whole batches
        keep = len(y_train) - len(y_train) % w.config.data.batch_size
        x_train, y_train = x_train[:keep], y_train[:keep]
    model = build_model(w)
    compile_model(w, model)
    clock = EpochClock()
    callbacks: list[Any] = [Clock(clock, w.updates_per_epoch)]
    s, o = w.config.schedule, w.config.optimizer
    if s.name == "cosine":  # once an epoch, before it
        callbacks.append(
            keras.callbacks.LearningRateScheduler(
                lambda epoch: float(cosine_per_epoch(o.lr, s.eta_min, w.schedule_horizon, epoch))
            )
        )
    history = model.fit(
        x_train,
        y_train,
        batch_size=w.config.data.batch_size,
        epochs=w.config.train.epochs,
        validation_data=(x_val, y_val),
        validation_batch_size=w.config.data.eval_batch_size,
        shuffle=w.config.data.shuffle,
        verbose=0,
        callbacks=callbacks,
    )
    clock.write(
        args.result,
        f"keras {keras.__version__}, jax {jax.__version__}",
        jax.devices()[0].device_kind,
        train_loss=float(history.history["loss"][-1]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
