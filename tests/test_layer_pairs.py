"""docs/models.md's table of stock layer pairs, every row tested: from the same weights (through the
name map) in float64, a pair the table says matches agrees to 1e-12, one it says differs is at least
1e-7 apart (or, for attention, has no one-to-one tensors)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import linen as nn

from flaxloop.checkpoint import NameMap, import_weights
from flaxloop.layers import BatchNorm, ParityDropout
from flaxloop.models import LinenModel
from loopspec.errors import UserError
from torchloop.layers import ParityDropout as TorchParityDropout

RNG = np.random.default_rng(0)


class Wrap(nn.Module):
    """One flax layer (or function of one) under the name `layer`, called with `train`."""

    make: Callable[[], Any]
    call: Callable[[Any, jax.Array, bool], jax.Array]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.call(self.make(), x, train)


class TorchWrap(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module, call: Callable[[Any, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.layer, self.call = layer, call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(self.layer, x)


def run_pair(torch_module: torch.nn.Module, flax_module: nn.Module, x: np.ndarray, train: bool = False) -> float:
    """Relative difference of the two outputs from the torch module's weights."""
    torch_module = torch_module.double().train(train)
    weights = {name: t.detach().numpy() for name, t in torch_module.state_dict().items()}
    model = LinenModel(flax_module)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(x))
    shapes = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float64 if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype),
        shapes,
    )
    names = NameMap.build(shapes, {k: tuple(v.shape) for k, v in weights.items()})
    variables = import_weights(shapes, weights, names)
    ours = torch_module(torch.tensor(x)).detach().numpy()
    theirs = np.asarray(model.apply(variables, jnp.asarray(x), train, {"dropout": jax.random.PRNGKey(1)})[0])
    return float(np.abs(ours - theirs).max() / np.abs(ours).max())


def images(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape)


def nchw(call: Callable) -> Callable:
    """A flax layer over NHWC, wrapped to take and give torch's NCHW."""
    return lambda layer, x, train: jnp.transpose(call(layer, jnp.transpose(x, (0, 2, 3, 1)), train), (0, 3, 1, 2))


# row name in docs/models.md -> (does it match?, a function giving the relative difference)
ROWS: dict[str, tuple[bool, Callable[[], float]]] = {
    "Linear / Dense": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Linear(5, 3), lambda m, x: m(x)),
            Wrap(lambda: nn.Dense(3, name="layer"), lambda m, x, t: m(x)),
            images(4, 5),
        ),
    ),
    "Conv2d(padding=1) / Conv(padding=((1, 1), (1, 1)))": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), lambda m, x: m(x)),
            Wrap(
                lambda: nn.Conv(3, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), name="layer"),
                nchw(lambda m, x, t: m(x)),
            ),
            images(2, 2, 8, 8),
        ),
    ),
    "Conv2d(stride=2, padding=1) / Conv(strides=2, padding='SAME')": (
        False,
        lambda: run_pair(
            TorchWrap(torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), lambda m, x: m(x)),
            Wrap(lambda: nn.Conv(3, (3, 3), strides=(2, 2), padding="SAME", name="layer"), nchw(lambda m, x, t: m(x))),
            images(2, 2, 8, 8),
        ),
    ),
    "LayerNorm / LayerNorm() (eps 1e-5 against 1e-6)": (
        False,
        lambda: run_pair(
            TorchWrap(torch.nn.LayerNorm(6), lambda m, x: m(x)),
            Wrap(lambda: nn.LayerNorm(name="layer"), lambda m, x, t: m(x)),
            images(4, 6) * 0.01,
        ),
    ),
    "LayerNorm / LayerNorm(epsilon=1e-5)": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.LayerNorm(6), lambda m, x: m(x)),
            Wrap(lambda: nn.LayerNorm(epsilon=1e-5, name="layer"), lambda m, x, t: m(x)),
            images(4, 6) * 0.01,
        ),
    ),
    "GELU / gelu (tanh approximation by default)": (
        False,
        lambda: run_pair(
            TorchWrap(torch.nn.Linear(4, 4), lambda m, x: F.gelu(m(x))),
            Wrap(lambda: nn.Dense(4, name="layer"), lambda m, x, t: nn.gelu(m(x))),
            images(3, 4),
        ),
    ),
    "GELU / gelu(approximate=False)": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Linear(4, 4), lambda m, x: F.gelu(m(x))),
            Wrap(lambda: nn.Dense(4, name="layer"), lambda m, x, t: nn.gelu(m(x), approximate=False)),
            images(3, 4),
        ),
    ),
    "Embedding / Embed (from the same weights)": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Embedding(10, 4), lambda m, x: m(x.long())),
            Wrap(lambda: nn.Embed(10, 4, name="layer"), lambda m, x, t: m(x.astype(jnp.int32))),
            RNG.integers(0, 10, size=(3, 5)).astype(np.float64),
        ),
    ),
    "BatchNorm1d / BatchNorm (flax's: biased running variance, momentum of the old statistic)": (
        False,
        lambda: batchnorm_running_statistics(flax_own=True),
    ),
    "BatchNorm1d / flaxloop.layers.BatchNorm": (True, lambda: batchnorm_running_statistics(flax_own=False)),
    "MaxPool2d(2) / max_pool((2, 2), strides=(2, 2))": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Conv2d(2, 2, 1), lambda m, x: F.max_pool2d(m(x), 2)),
            Wrap(
                lambda: nn.Conv(2, (1, 1), name="layer"),
                nchw(lambda m, x, t: nn.max_pool(m(x), (2, 2), strides=(2, 2))),
            ),
            images(2, 2, 6, 6),
        ),
    ),
    "flatten (C, H, W) / reshape of NHWC": (
        False,
        lambda: run_pair(
            TorchWrap(torch.nn.Linear(18, 2), lambda m, x: m(x.flatten(1))),
            Wrap(lambda: nn.Dense(2, name="layer"), lambda m, x, t: m(jnp.transpose(x, (0, 2, 3, 1)).reshape(2, -1))),
            images(2, 2, 3, 3),
        ),
    ),
    "flatten (C, H, W) / reshape of NCHW": (
        True,
        lambda: run_pair(
            TorchWrap(torch.nn.Linear(18, 2), lambda m, x: m(x.flatten(1))),
            Wrap(lambda: nn.Dense(2, name="layer"), lambda m, x, t: m(x.reshape(2, -1))),
            images(2, 2, 3, 3),
        ),
    ),
    "Dropout / Dropout (each framework's own masks)": (False, lambda: dropout_pair(parity=False)),
    "torchloop.layers.ParityDropout / flaxloop.layers.ParityDropout (parity mode)": (
        True,
        lambda: dropout_pair(parity=True),
    ),
    "MultiheadAttention / MultiHeadDotProductAttention": (False, lambda: attention_pair()),
}


def batchnorm_running_statistics(flax_own: bool) -> float:
    """Three train-mode batches, then eval: the running statistics decide the eval output. flax's own
    BatchNorm is given torch's momentum in its convention (0.9) so only the variance rule differs."""
    torch_bn = torch.nn.BatchNorm1d(4).double()
    batches = [RNG.normal(size=(8, 4)) * 2 + 1 for _ in range(3)]
    if flax_own:
        layer = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=jnp.float64, param_dtype=jnp.float64)
        train, evaluate = {"use_running_average": False}, {"use_running_average": True}
    else:
        layer = BatchNorm(dtype=jnp.float64, param_dtype=jnp.float64)
        train, evaluate = {"train": True}, {"train": False}
    variables = layer.init(jax.random.PRNGKey(0), jnp.zeros((8, 4)), **evaluate)
    for batch in batches:
        torch_bn(torch.tensor(batch))
        _, updates = layer.apply(variables, jnp.asarray(batch), **train, mutable=["batch_stats"])
        variables = {**variables, **updates}
    got = np.asarray(layer.apply(variables, jnp.asarray(batches[0]), **evaluate))
    expected = torch_bn.eval()(torch.tensor(batches[0])).detach().numpy()
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def dropout_pair(parity: bool) -> float:
    x = images(4, 50) + 3.0
    mask = (RNG.random((4, 50)) >= 0.5) / 0.5
    torch_layer = (TorchParityDropout if parity else torch.nn.Dropout)(0.5).train()
    if parity:
        torch_layer.mask = torch.tensor(mask)
    ours = torch_layer(torch.tensor(x)).numpy()
    if parity:
        flax_layer = ParityDropout(0.5)
        theirs = flax_layer.apply({"dropout_masks": {"mask": jnp.asarray(mask)}}, jnp.asarray(x), True)
    else:
        theirs = nn.Dropout(0.5, deterministic=False).apply({}, jnp.asarray(x), rngs={"dropout": jax.random.PRNGKey(0)})
    return float(np.abs(ours - np.asarray(theirs)).max() / np.abs(ours).max())


def attention_pair() -> float:
    """No one-to-one tensors: torch packs q, k, v in in_proj_weight (3E, E), flax keeps (E, heads, dim)."""
    torch_attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    weights = {name: tuple(t.shape) for name, t in TorchWrap(torch_attention, lambda m, x: x).state_dict().items()}
    flax_attention = Wrap(lambda: nn.MultiHeadDotProductAttention(2, name="layer"), lambda m, x, t: m(x))
    shapes = jax.eval_shape(LinenModel(flax_attention).init, jax.random.PRNGKey(0), jnp.zeros((2, 3, 8)))
    try:
        NameMap.build(shapes, weights)
    except UserError:
        return float("inf")
    return 0.0


def documented_rows() -> list[str]:
    page = Path(__file__).resolve().parent.parent / "docs" / "models.md"
    table = page.read_text().split("## Stock layer pairs", 1)[1].split("\n## ", 1)[0]
    return [
        re.sub(r"`", "", row.split("|")[1].strip())
        for row in table.splitlines()
        if row.startswith("| ") and "---" not in row
    ][1:]


def test_every_documented_row_is_tested() -> None:
    assert documented_rows() == list(ROWS)


@pytest.mark.parametrize("row", list(ROWS))
def test_layer_pair_row(row: str) -> None:
    matches, measure = ROWS[row]
    with jax.enable_x64(True):  # scoped: other tests in this worker keep JAX's float32 default
        difference = measure()
    if matches:
        assert difference <= 1e-12, f"{row}: {difference:.2e} apart; the table says they match"
    else:
        assert difference >= 1e-7, f"{row}: only {difference:.2e} apart; the table says they differ"
