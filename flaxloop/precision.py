"""Precision and device for the JAX backend: the dtype policy, fp16 loss scaling, TF32."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from flax import struct

from loopspec.config import LossScaleConfig
from loopspec.errors import UserError

COMPUTE_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16, "fp64": jnp.float64}
MIXED = ("bf16", "fp16")


def param_dtype(precision: str) -> Any:
    """Weights and optimizer state: float64 for fp64, float32 otherwise (mixed precision's master copy)."""
    return jnp.float64 if precision == "fp64" else jnp.float32


def compute_dtype(precision: str) -> Any:
    return COMPUTE_DTYPES[precision]


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


def check_precision(precision: str, device: jax.Device) -> None:
    """Fail at start-up, not mid-run, when this device cannot compile the requested precision."""
    if precision not in MIXED:
        return
    dtype = compute_dtype(precision)
    try:
        probe = jax.jit(lambda a: (a @ a).sum())(jnp.ones((2, 2), dtype))
        jax.block_until_ready(probe)
    except Exception as err:  # an XLA backend without the dtype fails here with its own error type
        alternatives = ", ".join(p for p in ("fp32", *MIXED) if p != precision)
        # XLA's CPU compiler converts float16 with F16C; without it (SSE4 CPUs) it fails to link helpers.
        unlinked = "symbols" in str(err).lower() and precision == "fp16"
        why = "this CPU lacks F16C, which XLA needs for float16" if unlinked else type(err).__name__
        raise UserError(
            f"train.precision {precision} is not available for JAX on {device.platform} ({why}); use {alternatives}"
        ) from None


@contextlib.contextmanager
def precision_scope(precision: str, device_name: str, tf32: bool = False) -> Iterator[jax.Device]:
    """fp64 needs jax_enable_x64, scoped so other runs in the process are unaffected; fp32 matmuls
    run in full float32 unless tf32 allows TensorFloat-32 (GPUs only)."""
    device = resolve_device(device_name)
    matmul = "tensorfloat32" if tf32 else "highest"
    with jax.enable_x64(precision == "fp64"), jax.default_device(device), jax.default_matmul_precision(matmul):
        check_precision(precision, device)
        yield device


class LossScale(struct.PyTreeNode):
    """Dynamic loss scaling with torch.amp.GradScaler's arithmetic.

    flax.training.dynamic_scale.DynamicScale has the same defaults but grows one step later
    (it compares the count of earlier finite steps with growth_interval) and scales one
    value_and_grad call, where an accumulated update unscales once per window.
    """

    scale: jax.Array  # float32, as GradScaler keeps it
    growth_tracker: jax.Array  # consecutive finite updates since the last change
    growth_factor: float = struct.field(pytree_node=False, default=2.0)
    backoff_factor: float = struct.field(pytree_node=False, default=0.5)
    growth_interval: int = struct.field(pytree_node=False, default=2000)

    @classmethod
    def create(cls, cfg: LossScaleConfig) -> "LossScale":
        return cls(
            jnp.asarray(cfg.init_scale, jnp.float32),
            jnp.zeros([], jnp.int32),
            cfg.growth_factor,
            cfg.backoff_factor,
            cfg.growth_interval,
        )

    def unscale(self, grads: Any) -> Any:
        """Multiply by the float32 reciprocal of the scale, as GradScaler.unscale_ does."""
        inverse = jnp.float32(1.0) / self.scale
        return jax.tree.map(lambda g: g * inverse.astype(g.dtype), grads)

    def update(self, found_inf: jax.Array) -> "LossScale":
        """GradScaler.update: back off on inf/nan; grow after growth_interval finite updates in a row."""
        successful = self.growth_tracker + 1
        grow = successful == self.growth_interval
        grown = self.scale * jnp.float32(self.growth_factor)
        finite_scale = jnp.where(grow & jnp.isfinite(grown), grown, self.scale)
        scale = jnp.where(found_inf, self.scale * jnp.float32(self.backoff_factor), finite_scale)
        tracker = jnp.where(found_inf | grow, 0, successful)
        return self.replace(scale=scale, growth_tracker=tracker.astype(jnp.int32))
