"""The three models as Flax linen modules, mirroring torchloop/models.py layer for layer.

Module names follow the torch attribute names (`blocks_0` for `blocks.0`), so
flaxloop/checkpoint.py maps them onto the canonical state_dict layout mechanically.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from loopspec.config import ModelConfig


def running_variance(batch_variance: jax.Array, count: int) -> jax.Array:
    """What torch's running_var tracks: the unbiased variance, n/(n-1) times the biased one."""
    return batch_variance * (count / (count - 1))


class BatchNorm(nn.Module):
    """BatchNorm with torch's semantics, which flax.linen.BatchNorm does not have.

    torch normalises with the biased batch variance but keeps the *unbiased* one
    (n/(n-1)) in running_var, weights the new statistic by `momentum` (Flax's momentum is
    the weight of the old one), and counts num_batches_tracked.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32  # of the output: the compute dtype
    param_dtype: Any = jnp.float32  # of the parameters, the running statistics and the arithmetic

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        reduce_axes = tuple(range(x.ndim - 1))
        x = x.astype(self.param_dtype)  # statistics in float32 under mixed precision, as torch computes them
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), self.param_dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), self.param_dtype)
        tracked = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        if train:
            mean = jnp.mean(x, axis=reduce_axes)
            var = jnp.mean(jnp.square(x - mean), axis=reduce_axes)
            if not self.is_initializing():
                count = x.size // features
                new_mean, new_var = jax.lax.stop_gradient((mean, running_variance(var, count)))
                running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * new_mean
                running_var.value = (1 - self.momentum) * running_var.value + self.momentum * new_var
                tracked.value = tracked.value + 1
        else:
            mean, var = running_mean.value, running_var.value
        return ((x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(self.dtype)


class Dropout(nn.Module):
    """flax Dropout that, given a mask (parity mode), applies it instead of drawing one."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: Optional[jax.Array] = None) -> jax.Array:
        if mask is not None and train:
            return x * mask
        return nn.Dropout(self.rate, deterministic=not train)(x)


class MLPBlock(nn.Module):
    width: int
    dropout: float
    bn_momentum: float
    bn_eps: float
    dtype: Any
    param_dtype: Any
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: Optional[jax.Array] = None) -> jax.Array:
        x = nn.Dense(self.width, use_bias=self.bias, dtype=self.dtype, param_dtype=self.param_dtype, name="linear")(x)
        x = BatchNorm(self.bn_momentum, self.bn_eps, self.dtype, self.param_dtype, name="norm")(x, train)
        x = nn.relu(x)
        return Dropout(self.dropout, name="dropout")(x, train, mask)


class TabularMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout blocks and a linear head (the intrusion lab)."""

    hidden: Sequence[int]
    out_dim: int
    dropout: float
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bias_before_norm: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, dropout_masks: Optional[Sequence[jax.Array]] = None
    ) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            block = MLPBlock(
                width,
                self.dropout,
                self.bn_momentum,
                self.bn_eps,
                self.dtype,
                self.param_dtype,
                self.bias_before_norm,
                name=f"blocks_{i}",
            )
            x = block(x, train, None if dropout_masks is None else dropout_masks[i])
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x)


class FashionMLP(nn.Module):
    """Flatten, 784-512-512-10 with ReLU: the Fashion-MNIST lab's network."""

    out_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, dropout_masks: None = None) -> jax.Array:
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(dense(512, name="linear_relu_stack_0")(x))
        x = nn.relu(dense(512, name="linear_relu_stack_2")(x))
        return dense(self.out_dim, name="linear_relu_stack_4")(x)


class ConvBlock(nn.Module):
    channels: int
    bn_momentum: float
    bn_eps: float
    dtype: Any
    param_dtype: Any
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # Padding spelled out as pairs: 'SAME' is not torch's symmetric padding in general.
        x = nn.Conv(
            self.channels,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=self.bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        x = BatchNorm(self.bn_momentum, self.bn_eps, self.dtype, self.param_dtype, name="norm")(x, train)
        x = nn.relu(x)
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class BatchNormCNN(nn.Module):
    """Three Conv-BatchNorm-ReLU-MaxPool blocks and a linear head; NCHW in, NHWC inside."""

    channels: Sequence[int]
    out_dim: int
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bias_before_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, dropout_masks: None = None) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 3, 1))
        for i, channels in enumerate(self.channels):
            x = ConvBlock(
                channels,
                self.bn_momentum,
                self.bn_eps,
                self.dtype,
                self.param_dtype,
                self.bias_before_norm,
                name=f"features_{i}",
            )(x, train)
        # Flatten in torch's (C, H, W) order so the head's weight means the same on both sides.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier")(x)


def build_model(
    cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, dtype: Any, param_dtype: Optional[Any] = None
) -> nn.Module:
    """`dtype` is the compute dtype; weights are kept in `param_dtype` (default: `dtype`)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    if cfg.name == "mlp":
        return TabularMLP(
            tuple(cfg.hidden),
            out_dim,
            cfg.dropout,
            cfg.batchnorm_momentum,
            cfg.batchnorm_eps,
            dtype,
            param_dtype,
            cfg.bias_before_norm,
        )
    if cfg.name == "fashion_mlp":
        return FashionMLP(out_dim, dtype, param_dtype)
    if cfg.name == "cnn":
        return BatchNormCNN(
            tuple(cfg.channels),
            out_dim,
            cfg.batchnorm_momentum,
            cfg.batchnorm_eps,
            dtype,
            param_dtype,
            cfg.bias_before_norm,
        )
    raise ValueError(f"unknown model {cfg.name}")
