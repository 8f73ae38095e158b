"""Parity-mode dropout masks generated on the model's device with tensor ops, in the step: loopspec.dropout's
generator (the specification) bit for bit, every layer's words from one Threefry evaluation (its ops
launched once per forward pass, not once per layer). The backend runs it on a GPU; on the CPU it runs
the NumPy specification, twice as fast there. torch's unsigned 32-bit arithmetic is thin, so the
words are int64 tensors masked to 32 bits after every add and rotation (nothing exceeds 2**63).
flaxloop/dropout.py has the same functions in the same order."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from loopspec.dropout import KEY_PARITY, ROTATIONS, ROW_BITS, WORD, DropoutLayer, blocks, keep_scale, keep_threshold

LOW32 = WORD - 1


def threefry2x32(key: tuple[int, int], x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20, elementwise on int64 tensors holding 32-bit words (new tensors; the inputs are
    kept); the key as Python ints."""
    k0, k1 = key
    schedule = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x0, x1 = (x0 + k0).bitwise_and_(LOW32), (x1 + k1).bitwise_and_(LOW32)
    spill = torch.empty_like(x1)
    for injection in range(1, 6):
        for rotation in ROTATIONS[(injection - 1) % 2]:
            x0.add_(x1).bitwise_and_(LOW32)
            torch.bitwise_right_shift(x1, 32 - rotation, out=spill)  # x1 < 2**32, so x1 << 29 < 2**61
            x1.bitwise_left_shift_(rotation).bitwise_or_(spill).bitwise_and_(LOW32).bitwise_xor_(x0)
        x0.add_(schedule[injection % 3]).bitwise_and_(LOW32)
        x1.add_(schedule[(injection + 1) % 3] + injection).bitwise_and_(LOW32)
    return x0, x1


@functools.lru_cache(maxsize=16)
def counter_columns(layers: tuple[DropoutLayer, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's blocks side by side: each column's offset of counter word 0 (layer << 20) and its
    counter word 1 (the block within the layer's sample); made once per run, on the device."""
    counts = [blocks(shape) for _, shape, _ in layers]
    offsets = [torch.full((n,), layer << ROW_BITS, dtype=torch.int64, device=device) for layer, n in enumerate(counts)]
    block_index = [torch.arange(n, dtype=torch.int64, device=device) for n in counts]
    return torch.cat(offsets), torch.cat(block_index)


def layer_mask(words: torch.Tensor, sample_shape: Sequence[int], rate: float, dtype: torch.dtype) -> torch.Tensor:
    """0 or 1/(1-rate) in `dtype` from each element's word (loopspec.dropout's keep rule)."""
    threshold = keep_threshold(rate)
    if threshold >= WORD:
        return torch.zeros((len(words), *sample_shape), dtype=dtype, device=words.device)
    scale = torch.tensor(keep_scale(rate), dtype=torch.float64).to(dtype)  # float64 rounded once, as NumPy does
    zero = torch.zeros((), dtype=dtype, device=words.device)
    return torch.where(words >= threshold, scale.to(words.device), zero).reshape(len(words), *sample_shape)


def parity_dropout_masks(
    seed: int, layers: Sequence[DropoutLayer], dtype: torch.dtype, forward_pass: int, rows: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every parity layer's mask for one forward pass, keyed by its module name (`layers`: those with a
    nonzero rate, in running order); `rows`: the rows' positions, on the model's device."""
    offsets, block_index = counter_columns(tuple(layers), rows.device)
    x0 = rows.to(torch.int64)[:, None] + offsets[None, :]
    y0, y1 = threefry2x32((seed, forward_pass), x0, block_index.expand_as(x0))
    masks, start = {}, 0
    for name, shape, rate in layers:
        count, size = blocks(shape), math.prod(shape)
        words = torch.stack([y0[:, start : start + count], y1[:, start : start + count]], dim=-1)
        masks[name] = layer_mask(words.reshape(len(rows), 2 * count)[:, :size], shape, rate, dtype)
        start += count
    return masks
