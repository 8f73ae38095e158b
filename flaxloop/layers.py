"""Parity building blocks for a user's Flax module (linen and nnx): the layers whose Flax defaults are
not torch's semantics.

- `BatchNorm` / `NnxBatchNorm`: torch's BatchNorm (normalise with the biased batch variance, keep the
  *unbiased* one in running_var, momentum as the weight of the new statistic, num_batches_tracked),
  where flax's keeps the biased variance and weights the old statistic by momentum.
- `ParityDropout` / `NnxParityDropout`: dropout that, in parity mode, applies the mask the training
  loop gives it (one counter-based generator keyed by seed, layer and forward pass, the same masks
  torchloop.layers.ParityDropout applies), else draws its own like nn.Dropout.

Layers are keyed by the order they run in one forward pass (`dropout_layers` finds them).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

# Set only while dropout_layers runs a probe forward pass: each parity layer records itself there.
_FOUND: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("parity_dropout_layers", default=None)


def running_variance(batch_variance: jax.Array, count: int) -> jax.Array:
    """What torch's running_var tracks: the unbiased variance, n/(n-1) times the biased one."""
    return batch_variance * (count / (count - 1))


def normalise(
    x: jax.Array,
    train: bool,
    scale: jax.Array,
    bias: jax.Array,
    running: tuple[jax.Array, jax.Array, jax.Array],
    momentum: float,
    epsilon: float,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    """torch's BatchNorm arithmetic over the last axis: the output, and the running (mean, variance,
    batches tracked) after this pass (moved toward the batch's in training). Values in and out, so
    that linen's and nnx's variables each stay with their own module."""
    x = x.astype(scale.dtype)  # in the weights' dtype: float32 under mixed precision, as torch
    if not train:
        alpha, beta = linear_and_constant_terms(*running[:2], epsilon, scale, bias)
        return x * alpha + beta, running
    reduce_axes = tuple(range(x.ndim - 1))
    batch_mean = jnp.mean(x, axis=reduce_axes)
    batch_var = jnp.mean(jnp.square(x - batch_mean), axis=reduce_axes)  # two passes, as torch's CPU kernel
    new_mean, new_var = jax.lax.stop_gradient((batch_mean, running_variance(batch_var, x.size // x.shape[-1])))
    mean, var, tracked = running
    updated = ((1 - momentum) * mean + momentum * new_mean, (1 - momentum) * var + momentum * new_var, tracked + 1)
    alpha, beta = linear_and_constant_terms(batch_mean, batch_var, epsilon, scale, bias)
    return x * alpha + beta, updated


def linear_and_constant_terms(
    mean: jax.Array, var: jax.Array, epsilon: float, scale: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per channel, alpha = scale / sqrt(var + eps) and beta = bias - mean * alpha, so that the output is one
    multiply-add per element, x * alpha + beta: the form of torch's CPU kernel
    (batch_norm_cpu_collect_linear_and_constant_terms), which also spares XLA an activation-sized
    intermediate in the backward pass (25 MB accessed per digits CNN update instead of 29)."""
    alpha = 1 / jnp.sqrt(var + epsilon) * scale
    return alpha, bias - mean * alpha


class BatchNorm(nn.Module):
    """BatchNorm with torch's semantics over the last (channel) axis, for flax.linen."""

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32  # of the output: the compute dtype
    param_dtype: Any = jnp.float32  # of the parameters, the running statistics and the arithmetic

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), self.param_dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), self.param_dtype)
        tracked = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        running = (running_mean.value, running_var.value, tracked.value)
        out, updated = normalise(x, train, scale, bias, running, self.momentum, self.epsilon)
        if train and not self.is_initializing():
            running_mean.value, running_var.value, tracked.value = updated
        return out.astype(self.dtype)


class ParityDropout(nn.Module):
    """nn.Dropout that applies the loop's mask (parity mode) when it is given one, for flax.linen."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        found = _FOUND.get()
        if found is not None:
            found.append((self.path, tuple(x.shape[1:]), float(self.rate)))
        if train and self.has_variable("dropout_masks", "mask"):
            return x * self.get_variable("dropout_masks", "mask")
        return nn.Dropout(self.rate, deterministic=not train)(x)


class NnxBatchNorm(nnx.Module):
    """BatchNorm with torch's semantics over the last axis, for flax.nnx; `model.train()` / `.eval()`
    switch it as they switch nnx.BatchNorm (use_running_average)."""

    def __init__(
        self,
        features: int,
        momentum: float = 0.1,
        epsilon: float = 1e-5,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        *,
        rngs: Optional[nnx.Rngs] = None,
    ):
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((features,), param_dtype))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.momentum, self.epsilon, self.dtype, self.param_dtype = momentum, epsilon, dtype, param_dtype
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        train = not self.use_running_average
        running = (self.mean[...], self.var[...], self.num_batches_tracked[...])
        out, updated = normalise(x, train, self.scale[...], self.bias[...], running, self.momentum, self.epsilon)
        if train:
            self.mean[...], self.var[...], self.num_batches_tracked[...] = updated
        return out.astype(self.dtype or x.dtype)


class NnxParityDropout(nnx.Module):
    """nnx.Dropout that applies the loop's mask (parity mode) when it is given one."""

    def __init__(self, rate: float, *, rngs: Optional[nnx.Rngs] = None):
        self.rate = rate
        self.dropout = nnx.Dropout(rate, rngs=rngs)
        self.deterministic = False
        self.mask: Optional[jax.Array] = nnx.data(None)  # data, not structure: the loop sets it per pass

    def __call__(self, x: jax.Array) -> jax.Array:
        found = _FOUND.get()
        if found is not None:
            found.append((self, tuple(x.shape[1:]), float(self.rate)))
        if self.mask is not None and not self.deterministic:
            return x * self.mask
        return self.dropout(x, deterministic=self.deterministic)


@contextlib.contextmanager
def finding_dropout_layers() -> Iterator[list]:
    """While inside, every parity dropout layer that runs appends (its path or itself, the shape of
    one sample's input, its rate), in the order they run."""
    found: list = []
    token = _FOUND.set(found)
    try:
        yield found
    finally:
        _FOUND.reset(token)
