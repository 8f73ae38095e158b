"""Parity-mode dropout: masks both backends draw from one counter-based generator.

Each framework's own dropout RNG differs (torch's Philox on its generator state, JAX's
threefry keys), so runs with dropout cannot match. In parity mode both backends take the
mask for (seed, layer, forward pass) from NumPy's Philox, a counter-based generator:
any mask can be recomputed from its coordinates alone, in any order.
"""

from __future__ import annotations

import numpy as np


def parity_dropout_mask(seed: int, layer: int, forward_pass: int, shape: tuple[int, ...], rate: float) -> np.ndarray:
    """Scaled keep-mask (0 or 1/(1-rate)) for one dropout layer in one training forward pass."""
    # The pass index sits in counter word 1 so that draws within one mask (which advance
    # word 0) never run into the next pass's stream.
    bit_generator = np.random.Philox(key=(seed << 64) | layer, counter=[0, forward_pass, 0, 0])
    uniform = np.random.Generator(bit_generator).random(shape)
    return (uniform >= rate) / (1.0 - rate)


def parity_dropout_masks(seed: int, forward_pass: int, shapes: list[tuple[int, ...]], rate: float) -> list[np.ndarray]:
    return [parity_dropout_mask(seed, layer, forward_pass, shape, rate) for layer, shape in enumerate(shapes)]
