"""Parity-mode dropout masks generated on the device, inside the jitted step, from the traced count of
forward passes: loopspec.dropout's generator (the specification) in uint32 jnp ops, bit for bit, every
layer's words from one Threefry evaluation. torchloop/dropout.py has the same functions in the same order."""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from loopspec import dropout as spec
from loopspec.dropout import ROW_BITS, WORD, DropoutLayer, blocks, keep_scale, keep_threshold


def threefry2x32(key: tuple[Any, Any], x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32-20, elementwise on uint32 arrays: the specification's own code on jax.numpy. Not jax's
    threefry2x32_p: its CPU lowering is a rolled loop, which XLA cannot fuse with the compare that follows."""
    return spec.threefry2x32(key, x0, x1, xp=jnp)


def counter_columns(layers: Sequence[DropoutLayer]) -> tuple[np.ndarray, np.ndarray]:
    """Every layer's blocks side by side: each column's offset of counter word 0 (layer << 20) and its
    counter word 1 (the block within the layer's sample); constants of the compiled step."""
    counts = [blocks(shape) for _, shape, _ in layers]
    offsets = np.concatenate([np.full(n, layer << ROW_BITS, np.uint32) for layer, n in enumerate(counts)])
    return offsets, np.concatenate([np.arange(n, dtype=np.uint32) for n in counts])


def layer_mask(words: jax.Array, sample_shape: Sequence[int], rate: float, dtype: Any) -> jax.Array:
    """0 or 1/(1-rate) in `dtype` from each element's word (loopspec.dropout's keep rule)."""
    threshold = keep_threshold(rate)
    keep = words >= jnp.uint32(threshold) if threshold < WORD else jnp.zeros(words.shape, bool)
    scale = np.asarray(keep_scale(rate), dtype)  # float64 rounded once, as the NumPy reference does
    return jnp.where(keep, scale, jnp.zeros((), dtype)).reshape(len(words), *sample_shape)


def parity_dropout_masks(
    seed: int, layers: Sequence[DropoutLayer], dtype: Any, forward_pass: jax.Array, rows: jax.Array
) -> dict[str, jax.Array]:
    """Every parity layer's mask for one forward pass, keyed by its path key (`layers`: those with a nonzero
    rate, in running order); `seed`, `forward_pass` and `rows` (the rows' positions) may be traced (the
    step takes the seed as an argument, so runs that differ only in it share the compiled step)."""
    offsets, block_index = counter_columns(layers)
    rows = jnp.asarray(rows).astype(jnp.uint32)
    x0 = rows[:, None] + offsets[None, :]
    y0, y1 = threefry2x32((seed, forward_pass), x0, jnp.broadcast_to(block_index, x0.shape))
    masks, start = {}, 0
    for name, shape, rate in layers:
        count, size = blocks(shape), math.prod(shape)
        words = jnp.stack([y0[:, start : start + count], y1[:, start : start + count]], axis=-1)
        masks[name] = layer_mask(words.reshape(len(rows), 2 * count)[:, :size], shape, rate, dtype)
        start += count
    return masks
