"""Parity-mode dropout: the masks both backends generate, on their device, inside the training step,
from one counter-based generator. This module is the specification, in NumPy; flaxloop.dropout and
torchloop.dropout compute the same bits in each framework's integer ops, and loopspec.dropout_kernel in
one compiled loop (what torch draws on the CPU).

Each framework's own dropout RNG differs (torch's Philox on its generator state, JAX's threefry keys),
so runs with dropout cannot match. In parity mode every mask element is a pure function of (seed,
forward pass, layer, the element's position), so any mask can be recomputed anywhere, in any order:

- the generator is Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123's, jax.random's);
- its key is (seed, forward pass): the run's count of training forward passes, one per micro-batch;
- the element at flat index j of the sample in row r of the micro-batch (r its position as the loop
  drew the micro-batch, so data-parallel shards take their global rows and reversed rows keep their
  masks) in the layer-th parity dropout layer takes word j % 2 of
  threefry2x32(key, counter=(r + layer * 2**20, j // 2));
- it is kept iff that 32-bit word >= ceil(rate * 2**32), an exact integer test on every backend, and
  a kept unit is 1/(1-rate), computed in float64 and rounded once to the model's dtype.

`layer` counts the model's parity dropout layers with a nonzero rate, in the order one forward pass
runs them (a rate-0 layer is the identity, and a fused kernel may skip it). The layout allows
micro-batches of up to 2**20 rows and 4096 such layers (check_layout).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from loopspec.errors import UserError

# Threefry-2x32's rotation constants (two alternating groups of four rounds) and key-schedule parity.
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = 0x1BD11BDA
WORD = 1 << 32
ROW_BITS = 20  # counter word 0 is row + layer << ROW_BITS
MAX_LAYERS = WORD >> ROW_BITS

# A parity dropout layer as the backends list it: (its name or path key, one sample's input shape, rate).
DropoutLayer = tuple[str, tuple[int, ...], float]


def threefry2x32(key: tuple[Any, Any], x0: Any, x1: Any, xp: Any = np) -> tuple[Any, Any]:
    """Threefry-2x32-20 of counters (x0, x1) under key (k0, k1), elementwise; uint32 arithmetic wraps.
    `xp`: the array module, NumPy or one with its uint32 API (flaxloop passes jax.numpy; keys may be traced)."""
    k0, k1 = (xp.uint32(k) if isinstance(k, (int, np.integer)) else xp.asarray(k).astype(xp.uint32) for k in key)
    schedule = (k0, k1, k0 ^ k1 ^ xp.uint32(KEY_PARITY))
    x0, x1 = xp.asarray(x0).astype(xp.uint32) + k0, xp.asarray(x1).astype(xp.uint32) + k1
    with np.errstate(over="ignore"):  # uint32 scalars warn on the wrap-around that is the arithmetic
        for injection in range(1, 6):
            for rotation in ROTATIONS[(injection - 1) % 2]:
                x0 = x0 + x1
                x1 = (x1 << xp.uint32(rotation)) | (x1 >> xp.uint32(32 - rotation))
                x1 = x1 ^ x0
            x0 = x0 + schedule[injection % 3]
            x1 = x1 + schedule[(injection + 1) % 3] + xp.uint32(injection)
    return x0, x1


def blocks(sample_shape: Sequence[int]) -> int:
    """Threefry blocks (two words each) one sample of a layer takes."""
    return (math.prod(sample_shape) + 1) // 2


def keep_threshold(rate: float) -> int:
    """A unit is kept iff its 32-bit word >= this: ceil(rate * 2**32), exact (a float times a power of 2)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"parity dropout: rate {rate} is outside [0, 1]")
    return math.ceil(rate * WORD)


def keep_scale(rate: float) -> float:
    """The value of a kept unit, 1/(1-rate) in float64 (0 at rate 1, where none is kept)."""
    return 0.0 if rate >= 1.0 else 1.0 / (1.0 - rate)


def check_layout(layers: Sequence[DropoutLayer], rows: int) -> None:
    """Refuse what the counter layout cannot address, in one line."""
    if len(layers) > MAX_LAYERS:
        raise UserError(f"parity dropout addresses at most {MAX_LAYERS} dropout layers; the model has {len(layers)}")
    if rows > 1 << ROW_BITS:
        raise UserError(f"parity dropout addresses micro-batches of at most 2**{ROW_BITS} rows; lower data.batch_size")
    for name, shape, _ in layers:
        if blocks(shape) >= WORD:
            raise UserError(f"parity dropout: layer {name} takes samples of {math.prod(shape)} elements, above 2**33")


def counter_words(seed: int, forward_pass: int, layer: int, rows: np.ndarray) -> np.ndarray:
    """Counter word 0 of each row's blocks, rows[i] + layer << 20, after checking every part of the key
    and counter fits its field."""
    for name, value, limit in (
        ("seed", seed, WORD),
        ("forward_pass", forward_pass, WORD),
        ("layer", layer, MAX_LAYERS),
    ):
        if not 0 <= value < limit:
            raise ValueError(f"parity dropout: {name} {value} is outside [0, {limit})")
    rows = np.asarray(rows, np.int64)
    if rows.size and not (0 <= rows.min() and rows.max() < 1 << ROW_BITS):
        raise ValueError(f"parity dropout: row positions must lie in [0, 2**{ROW_BITS})")
    return rows + (layer << ROW_BITS)


def random_words(seed: int, forward_pass: int, layer: int, rows: np.ndarray, sample_size: int) -> np.ndarray:
    """(len(rows), sample_size) uint32 words: element (i, j) is word j % 2 of the block at counter
    (rows[i] + layer << 20, j // 2) under key (seed, forward_pass)."""
    counters = counter_words(seed, forward_pass, layer, rows)
    count = (sample_size + 1) // 2
    x0 = np.broadcast_to(counters[:, None], (len(counters), count))
    x1 = np.broadcast_to(np.arange(count)[None, :], (len(counters), count))
    y0, y1 = threefry2x32((seed, forward_pass), x0, x1)
    return np.stack([y0, y1], axis=-1).reshape(len(counters), 2 * count)[:, :sample_size]


def parity_dropout_mask(
    seed: int,
    layer: int,
    forward_pass: int,
    rows: np.ndarray,
    sample_shape: Sequence[int],
    rate: float,
    dtype: Any = np.float64,
) -> np.ndarray:
    """The scaled keep-mask (0 or 1/(1-rate), in `dtype`) of one dropout layer in one training forward
    pass, for the micro-batch rows at positions `rows` (np.arange(batch) for a whole micro-batch)."""
    words = random_words(seed, forward_pass, layer, rows, math.prod(sample_shape))
    threshold = keep_threshold(rate)
    keep = words >= threshold if threshold < WORD else np.zeros(words.shape, bool)
    scale = np.asarray(keep_scale(rate), dtype)
    return np.where(keep, scale, np.zeros((), dtype)).reshape(len(words), *sample_shape)


# Large masks are drawn in parts of rows whose widest layer has at most 2**17 words, so that NumPy's passes
# over them stay in cache: gpt_char's 1.7 million words a pass took 22 ms in parts of 8 rows, 28 ms whole
# (measured on 2 cores; splitting the rows over two threads instead took 21 ms, 25 ms with parts).
PART_WORDS = 1 << 17


def parity_dropout_masks(
    seed: int, layers: Sequence[DropoutLayer], dtype: Any, forward_pass: int, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Every parity layer's mask for one forward pass, keyed by the layer's name (`layers`: those with a
    nonzero rate, in running order); the backends' functions of this name compute the same. Compiled
    (loopspec.dropout_kernel) where a C compiler or numba is found; else parity_dropout_mask's, in parts of the
    rows (a row's masks depend on its position alone, so the parts join to the same bits)."""
    from loopspec import dropout_kernel  # it imports this module's constants

    rows = np.asarray(rows)
    if dropout_kernel.fill is not None:
        return {
            name: dropout_kernel.masks(
                seed,
                forward_pass,
                counter_words(seed, forward_pass, layer, rows),
                shape,
                keep_threshold(rate),
                keep_scale(rate),
                dtype,
            )
            for layer, (name, shape, rate) in enumerate(layers)
        }
    rows_a_part = max(1, PART_WORDS // max((2 * blocks(shape) for _, shape, _ in layers), default=1))
    if len(rows) > rows_a_part:
        parts = [
            parity_dropout_masks(seed, layers, dtype, forward_pass, rows[i : i + rows_a_part])
            for i in range(0, len(rows), rows_a_part)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return {
        name: parity_dropout_mask(seed, layer, forward_pass, rows, shape, rate, dtype)
        for layer, (name, shape, rate) in enumerate(layers)
    }
