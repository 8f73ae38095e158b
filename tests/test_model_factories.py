"""flaxloop.models.from_factory: an nnx factory is built abstractly, and what a run reads of it (its
other state, its init, its forward) is what an eager build gives; linen factories and factories that
read an array's value while building are built as they are."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from flaxloop.models import LinenModel, NnxModel, from_factory


class RngKeeping(nnx.Module):
    """Linear, BatchNorm and an nnx.Dropout that keeps its own nnx.Rngs (state outside params and stats)."""

    def __init__(self) -> None:
        rngs = nnx.Rngs(params=1, dropout=7)
        self.linear = nnx.Linear(4, 3, rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.drop(self.norm(self.linear(x)))


class ReadsAValue(nnx.Module):
    """Reads an array's value while building: not traceable."""

    def __init__(self) -> None:
        scale = float(jnp.sqrt(jnp.asarray(4.0)))
        self.linear = nnx.Linear(4, 3, kernel_init=nnx.initializers.constant(scale), rngs=nnx.Rngs(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


class PlainArrayAttribute(nnx.Module):
    """A constant kept as a plain array attribute (not an nnx.Variable): part of the module's structure."""

    def __init__(self) -> None:
        self.mask = jnp.tril(jnp.ones((3, 3)))
        self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x) @ self.mask


class StringVariable(nnx.Module):
    """A Variable that holds no array: not a valid JAX type under tracing."""

    def __init__(self) -> None:
        self.tag = nnx.Variable("hello")
        self.linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


class LinenHead(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return nn.Dense(3)(x)


def leaves_equal(a: Any, b: Any) -> bool:
    def data(leaf: Any) -> np.ndarray:
        is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(leaf) if is_key else leaf)

    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(np.array_equal(data(x), data(y)) for x, y in pairs)


def test_an_nnx_factory_is_built_abstractly_and_reads_as_an_eager_build() -> None:
    eager, lazy = NnxModel(RngKeeping()), from_factory(RngKeeping)
    assert isinstance(lazy, NnxModel) and lazy.build is not None
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(lazy.params))
    assert jax.tree.leaves(lazy.rest) and leaves_equal(eager.rest, lazy.rest)  # the dropout Rngs' key and count
    key, x = jax.random.PRNGKey(0), jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    variables = eager.init(key, x)
    assert leaves_equal(variables, lazy.init(key, x))  # eagerly
    assert leaves_equal(variables, jax.jit(lazy.init)(key, x))  # one compiled program
    shapes = jax.eval_shape(lazy.init, key, x)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(lambda v: (v.shape, v.dtype), variables)
    for train in (False, True):
        rngs = {"dropout": jax.random.PRNGKey(5)} if train else None
        assert leaves_equal(eager.apply(variables, x, train, rngs), lazy.apply(variables, x, train, rngs))


@pytest.mark.parametrize(
    ("factory", "kind"),
    [(ReadsAValue, NnxModel), (PlainArrayAttribute, NnxModel), (StringVariable, NnxModel), (LinenHead, LinenModel)],
    ids=["nnx reading a value", "nnx with a plain array attribute", "nnx with a string Variable", "linen"],
)
def test_other_factories_are_built_as_they_are(factory: Any, kind: type) -> None:
    model = from_factory(factory)
    assert isinstance(model, kind)
    assert getattr(model, "build", None) is None  # no abstract template: what the factory built
    x = jnp.ones((2, 4))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert all(not isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(variables))
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)  # nothing traced leaks in
    assert logits.shape == (2, 3)
