"""Losses as functions loss(logits, labels) with integer class ids; torch's reductions."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from loopspec.config import LossConfig

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0, weight: Optional[jax.Array] = None
) -> jax.Array:
    """nn.CrossEntropyLoss(weight, label_smoothing) with mean reduction."""
    num_classes = logits.shape[1]
    if weight is None:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=logits.dtype), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets).mean()
    # torch normalises both the NLL and the smoothing term by the summed weight of the targets.
    log_p = jax.nn.log_softmax(logits)
    target_weight = weight[labels]
    nll = -jnp.sum(target_weight * jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]) / target_weight.sum()
    smooth = -jnp.sum(log_p * weight) / target_weight.sum()
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / num_classes)


def binary_cross_entropy(logits: jax.Array, targets: jax.Array, pos_weight: Optional[float] = None) -> jax.Array:
    """nn.BCEWithLogitsLoss(pos_weight) with mean reduction."""
    if pos_weight is None:
        return optax.sigmoid_binary_cross_entropy(logits, targets).mean()
    # optax has no pos_weight: torch's formula, -[pw * y * log s(x) + (1 - y) * log s(-x)].
    return -jnp.mean(pos_weight * targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))


def sigmoid_focal_loss(logits: jax.Array, targets: jax.Array, alpha: Optional[float], gamma: float) -> jax.Array:
    """torchvision's sigmoid_focal_loss with mean reduction (optax computes the same terms)."""
    return optax.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma).mean()


def softmax_focal_loss(
    logits: jax.Array, labels: jax.Array, gamma: float, weight: Optional[jax.Array] = None
) -> jax.Array:
    """Multi-class focal loss: mean of -w[y] (1 - p_y)^gamma log p_y."""
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]
    loss = -((1 - jnp.exp(log_p)) ** gamma) * log_p
    if weight is not None:
        loss = loss * weight[labels]
    return loss.mean()


def token_level(loss: LossFn) -> LossFn:
    """Logits (N, T, V) and labels (N, T) as N*T rows, the mean over every token (as torchloop's
    TokenLevel); (N, C) logits pass as they are."""

    def flattened(logits: jax.Array, labels: jax.Array) -> jax.Array:
        if logits.ndim > 2:
            logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        return loss(logits, labels)

    return flattened


def make_loss(cfg: LossConfig, num_classes: int, out_dim: int) -> LossFn:
    return token_level(sample_loss(cfg, out_dim))


def sample_loss(cfg: LossConfig, out_dim: int) -> LossFn:
    """The loss over (N, C) logits and (N,) class ids."""

    def binary_targets(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return labels.astype(logits.dtype)[:, None]

    def one_hot_targets(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return jax.nn.one_hot(labels, logits.shape[1], dtype=logits.dtype)

    def weight(logits: jax.Array) -> Optional[jax.Array]:
        return None if cfg.class_weights is None else jnp.asarray(cfg.class_weights, dtype=logits.dtype)

    if cfg.name == "cross_entropy":
        return lambda logits, labels: cross_entropy(logits, labels, cfg.label_smoothing, weight(logits))
    if cfg.name == "bce":
        return lambda logits, labels: binary_cross_entropy(logits, binary_targets(logits, labels), cfg.pos_weight)
    if cfg.name == "focal":
        if out_dim == 1:
            return lambda logits, labels: sigmoid_focal_loss(
                logits, binary_targets(logits, labels), cfg.alpha, cfg.gamma
            )
        return lambda logits, labels: softmax_focal_loss(logits, labels, cfg.gamma, weight(logits))
    if cfg.name in ("mse", "l1"):
        targets = binary_targets if out_dim == 1 else one_hot_targets
        if cfg.name == "mse":
            return lambda logits, labels: optax.squared_error(logits, targets(logits, labels)).mean()
        return lambda logits, labels: jnp.abs(logits - targets(logits, labels)).mean()
    raise ValueError(f"unknown loss {cfg.name}")
