"""Model pairs that are not built-in models: what a user porting their own model brings. Each
factory takes keyword arguments (the config's model.kwargs); the `plant` keyword of a flax factory
plants one classic porting mistake, for the tests that the pair check names it at the right place.

- residual MLP with LayerNorm and GELU        torch: ResidualMLP        flax.linen: LinenResidualMLP
- small causal Transformer over token ids     torch: TinyTransformer    flax.nnx:   NnxTinyTransformer
- 1-D conv net                                torch: ConvNet1d          flax.linen: LinenConvNet1d
- CNN with BatchNorm and parity dropout       torch: BatchNormDropoutCNN flax.nnx:  NnxBatchNormDropoutCNN
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F
from flax import linen as nn
from flax import nnx

from flaxloop.layers import NnxBatchNorm, NnxParityDropout, ParityDropout
from torchloop.layers import ParityDropout as TorchParityDropout

# ----------------------------------------------------------------------------- residual MLP


class ResidualBlock(torch.nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, 2 * width)
        self.proj = torch.nn.Linear(2 * width, width)
        self.dropout = TorchParityDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.proj(F.gelu(self.fc(self.norm(x)))))


class ResidualMLP(torch.nn.Module):
    def __init__(self, features: int = 41, width: int = 16, depth: int = 2, classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.embed = torch.nn.Linear(features, width)
        self.blocks = torch.nn.ModuleList(ResidualBlock(width, dropout) for _ in range(depth))
        self.ln_f = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class LinenResidualBlock(nn.Module):
    width: int
    dropout: float
    plant: str = ""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        eps = 1e-6 if self.plant == "layernorm eps" else 1e-5  # flax's default against torch's
        approximate = self.plant == "gelu tanh"  # flax's default against torch's exact GELU
        h = nn.LayerNorm(epsilon=eps, name="norm")(x)
        h = nn.gelu(nn.Dense(2 * self.width, name="fc")(h), approximate=approximate)
        h = nn.Dense(self.width, name="proj")(h)
        return x + ParityDropout(self.dropout, name="dropout")(h, train)


class LinenResidualMLP(nn.Module):
    width: int = 16
    depth: int = 2
    classes: int = 2
    dropout: float = 0.1
    plant: str = ""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Dense(self.width, name="embed")(x)
        for i in range(self.depth):
            x = LinenResidualBlock(self.width, self.dropout, self.plant, name=f"blocks_{i}")(x, train)
        return nn.Dense(self.classes, name="head")(nn.LayerNorm(epsilon=1e-5, name="ln_f")(x))


def residual_mlp(**kwargs: Any) -> ResidualMLP:
    return ResidualMLP(**{k: v for k, v in kwargs.items() if k != "plant"})


def linen_residual_mlp(features: int = 41, **kwargs: Any) -> LinenResidualMLP:
    return LinenResidualMLP(**kwargs)


# ----------------------------------------------------------------------------- causal Transformer


class CausalSelfAttention(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(width // self.heads)
        mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class TransformerBlock(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyTransformer(torch.nn.Module):
    """Token ids (N, T) -> a class per sequence, read from the last position (causal attention)."""

    def __init__(
        self, vocab: int = 16, length: int = 12, width: int = 16, heads: int = 2, depth: int = 2, classes: int = 2
    ):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width)
        self.wpe = torch.nn.Embedding(length, width)
        self.blocks = torch.nn.ModuleList(TransformerBlock(width, heads) for _ in range(depth))
        self.ln_f = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)[:, -1])


class NnxCausalSelfAttention(nnx.Module):
    def __init__(self, width: int, heads: int, plant: str, rngs: nnx.Rngs, **dtypes: Any):
        self.heads, self.plant = heads, plant
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs, **dtypes)
        self.out = nnx.Linear(width, width, rngs=rngs, **dtypes)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        q, k, v = (t.reshape(batch, length, self.heads, width // self.heads).transpose(0, 2, 1, 3) for t in (q, k, v))
        scale = math.sqrt(width) if self.plant == "attention scale" else math.sqrt(width // self.heads)
        scores = q @ k.transpose(0, 1, 3, 2) / scale
        mask = jnp.tril(jnp.ones((length, length), bool))
        scores = jnp.where(mask, scores, -jnp.inf)
        y = jax.nn.softmax(scores, axis=-1) @ v
        return self.out(y.transpose(0, 2, 1, 3).reshape(batch, length, width))


class NnxMLP(nnx.Module):
    """torch's Sequential(Linear, GELU, Linear): children named 0 and 2, as the state_dict has them."""

    def __init__(self, width: int, rngs: nnx.Rngs, **dtypes: Any):
        setattr(self, "0", nnx.Linear(width, 4 * width, rngs=rngs, **dtypes))
        setattr(self, "2", nnx.Linear(4 * width, width, rngs=rngs, **dtypes))

    def __call__(self, x: jax.Array) -> jax.Array:
        return getattr(self, "2")(nnx.gelu(getattr(self, "0")(x), approximate=False))


class NnxTransformerBlock(nnx.Module):
    def __init__(self, width: int, heads: int, plant: str, rngs: nnx.Rngs, **dtypes: Any):
        self.ln_1 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **dtypes)
        self.attn = NnxCausalSelfAttention(width, heads, plant, rngs, **dtypes)
        self.ln_2 = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **dtypes)
        self.mlp = NnxMLP(width, rngs, **dtypes)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NnxTinyTransformer(nnx.Module):
    def __init__(
        self,
        vocab: int = 16,
        length: int = 12,
        width: int = 16,
        heads: int = 2,
        depth: int = 2,
        classes: int = 2,
        plant: str = "",
        seed: int = 0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ):
        rngs, dtypes = nnx.Rngs(seed), {"dtype": dtype, "param_dtype": param_dtype}
        self.wte = nnx.Embed(vocab, width, rngs=rngs, **dtypes)
        self.wpe = nnx.Embed(length, width, rngs=rngs, **dtypes)
        self.blocks = nnx.List([NnxTransformerBlock(width, heads, plant, rngs, **dtypes) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs, **dtypes)
        self.head = nnx.Linear(width, classes, rngs=rngs, **dtypes)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.wte(tokens) + self.wpe(jnp.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)[:, -1])


def tiny_transformer(**kwargs: Any) -> TinyTransformer:
    return TinyTransformer(**{k: v for k, v in kwargs.items() if k != "plant"})


def nnx_tiny_transformer(dtype: Any = None, param_dtype: Any = jnp.float32, **kwargs: Any) -> NnxTinyTransformer:
    return NnxTinyTransformer(dtype=dtype, param_dtype=param_dtype, **kwargs)


# ----------------------------------------------------------------------------- 1-D conv net


class ConvNet1d(torch.nn.Module):
    """(N, C, L) signals: two strided Conv1d, ReLU, flattened (C, L) order, a linear head."""

    def __init__(self, channels: int = 2, length: int = 16, width: int = 6, classes: int = 3):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(channels, width, kernel_size=3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv1d(width, width, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(width * (length // 2), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.flatten(1))


class LinenConvNet1d(nn.Module):
    width: int = 6
    classes: int = 3
    plant: str = ""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 1))  # NCL -> NLC
        padding = "SAME" if self.plant == "same padding" else ((1, 1),)  # SAME pads (0, 1) at stride 2
        x = nn.relu(nn.Conv(self.width, (3,), strides=(2,), padding=padding, name="conv1")(x))
        x = nn.relu(nn.Conv(self.width, (3,), padding=((1, 1),), name="conv2")(x))
        if self.plant != "flatten order":
            x = jnp.transpose(x, (0, 2, 1))  # flatten in torch's (C, L) order
        return nn.Dense(self.classes, name="head")(x.reshape(x.shape[0], -1))


def conv_net_1d(**kwargs: Any) -> ConvNet1d:
    return ConvNet1d(**{k: v for k, v in kwargs.items() if k != "plant"})


def linen_conv_net_1d(channels: int = 2, length: int = 16, **kwargs: Any) -> LinenConvNet1d:
    return LinenConvNet1d(**kwargs)


# ----------------------------------------------------------------------------- CNN with BatchNorm and dropout


class BatchNormDropoutCNN(torch.nn.Module):
    def __init__(self, channels: int = 1, size: int = 8, width: int = 4, classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False)
        self.norm = torch.nn.BatchNorm2d(width)
        self.dropout = TorchParityDropout(dropout)
        self.head = torch.nn.Linear(width * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.norm(self.conv(x))), 2)
        return self.head(self.dropout(x.flatten(1)))


class NnxBatchNormDropoutCNN(nnx.Module):
    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        width: int = 4,
        classes: int = 10,
        dropout: float = 0.2,
        plant: str = "",
        seed: int = 0,
    ):
        rngs = nnx.Rngs(seed)
        self.conv = nnx.Conv(channels, width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
        momentum = 0.9 if plant == "batchnorm momentum" else 0.1  # flax's convention against torch's
        self.norm = NnxBatchNorm(width, momentum=momentum)
        self.dropout = NnxParityDropout(dropout, rngs=rngs)
        self.head = nnx.Linear(width * (size // 2) ** 2, classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 3, 1))
        x = nnx.max_pool(nnx.relu(self.norm(self.conv(x))), (2, 2), strides=(2, 2))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return self.head(self.dropout(x))


def batchnorm_dropout_cnn(**kwargs: Any) -> BatchNormDropoutCNN:
    return BatchNormDropoutCNN(**{k: v for k, v in kwargs.items() if k not in ("plant", "seed")})


def nnx_batchnorm_dropout_cnn(**kwargs: Any) -> NnxBatchNormDropoutCNN:
    return NnxBatchNormDropoutCNN(**kwargs)
