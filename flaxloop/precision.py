"""Run dtype and device for the JAX backend."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp

from loopspec.errors import UserError

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def jax_dtype(name: str) -> Any:
    return DTYPES[name]


def resolve_device(name: str) -> jax.Device:
    """cpu, cuda, or auto (the first GPU when there is one); cuda without a GPU is a start-up error."""
    if name == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        if name == "auto":
            return jax.devices("cpu")[0]
        raise UserError("train.device is cuda but JAX sees no GPU; use cpu or auto") from None


@contextlib.contextmanager
def precision_scope(dtype_name: str, device_name: str) -> Iterator[jax.Device]:
    """float64 needs jax_enable_x64; scoping it keeps float32 runs in the same process unaffected."""
    device = resolve_device(device_name)
    with jax.enable_x64(dtype_name == "float64"), jax.default_device(device):
        yield device
