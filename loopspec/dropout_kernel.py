"""loopspec.dropout's masks as one compiled loop (numba), for the backends that draw them on the host
(torch on the CPU). The NumPy specification makes about 125 passes over arrays of words, 13 to 14 ns
a word on 2 cores; this loop keeps each block in registers from counter to mask value, about 1.4 ns
(measured on the same machine), and writes the mask directly. Bit-identical to the specification
(tests/test_dropout.py compares them). Without numba, compiled_fill is None and
loopspec.dropout.parity_dropout_masks draws them with NumPy.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

# numba's coloured error messages start colorama, whose exit handler writes an ANSI reset to a terminal:
# a --quiet run must print nothing (tests/test_sinks.py). A user's own setting is kept.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

try:  # numba comes with the [torch] extra; an interpreter without it (or too new a NumPy for it) falls back
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None  # type: ignore[assignment]

from loopspec import dropout as specification

# Threefry's constants, written here because numba's cache is keyed on this file alone: taken from
# loopspec.dropout, a change there would not reach the cached machine code. Checked against it below.
FIRST, SECOND = (13, 15, 26, 6), (17, 29, 16, 24)  # the rotations of groups of four rounds 1, 3, 5 and 2, 4
KEY_PARITY = 0x1BD11BDA
assert (FIRST, SECOND) == specification.ROTATIONS and KEY_PARITY == specification.KEY_PARITY
WRITTEN_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # others: float64, then one rounding
LOW = np.uint64(0xFFFFFFFF)


def _four_rounds(x0: Any, x1: Any, r0: int, r1: int, r2: int, r3: int) -> tuple[Any, Any]:
    """Threefry's four rounds between key injections; uint32 arithmetic in uint64 lanes masked to
    32 bits (numba widens uint32 sums). Written out, so the rotations compile to shifts by constants (a
    loop over a table of rotations took twice as long)."""
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r0)) | (x1 >> np.uint64(32 - r0))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r1)) | (x1 >> np.uint64(32 - r1))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r2)) | (x1 >> np.uint64(32 - r2))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r3)) | (x1 >> np.uint64(32 - r3))) & LOW) ^ x0
    return x0, x1


def _fill_masks(k0: Any, k1: Any, counters: Any, sample_size: Any, threshold: Any, scale: Any, out: Any) -> None:
    """out[i, j] = scale if word j % 2 of threefry2x32((k0, k1), (counters[i], j // 2)) >= threshold
    else 0: loopspec.dropout.threefry2x32's rounds and key schedule, one block at a time. The threshold
    compared as uint64 and the row's counter added once: 1.4 ns a word instead of 2.3 (measured)."""
    keep_from = np.uint64(threshold)  # at most 2**32: rate 1 keeps none
    a, b = np.uint64(k0), np.uint64(k1)
    c = a ^ b ^ np.uint64(KEY_PARITY)
    for i in range(counters.shape[0]):
        row = out[i]
        first_word = (np.uint64(counters[i]) + a) & LOW
        for block in range((sample_size + 1) // 2):
            x0, x1 = first_word, (np.uint64(block) + b) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + b) & LOW, (x1 + c + np.uint64(1)) & LOW
            x0, x1 = four_rounds(x0, x1, SECOND[0], SECOND[1], SECOND[2], SECOND[3])
            x0, x1 = (x0 + c) & LOW, (x1 + a + np.uint64(2)) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + a) & LOW, (x1 + b + np.uint64(3)) & LOW
            x0, x1 = four_rounds(x0, x1, SECOND[0], SECOND[1], SECOND[2], SECOND[3])
            x0, x1 = (x0 + b) & LOW, (x1 + c + np.uint64(4)) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + c) & LOW, (x1 + a + np.uint64(5)) & LOW
            j = 2 * block
            row[j] = scale if x0 >= keep_from else 0.0
            if j + 1 < sample_size:
                row[j + 1] = scale if x1 >= keep_from else 0.0


def compile_fill() -> Any:
    """_fill_masks compiled, cached on disk where numba finds a writable place (beside this file, or the
    user's cache directory); where it finds none (a read-only install and home), compiled each run."""
    if numba is None:  # pragma: no cover
        return None
    try:
        return numba.njit(cache=True, boundscheck=False)(_fill_masks)
    except (RuntimeError, OSError):  # numba: "cannot cache function ...: no locator available"
        return numba.njit(boundscheck=False)(_fill_masks)


four_rounds = numba.njit(_four_rounds) if numba is not None else None
compiled_fill = compile_fill()


def masks(
    seed: int,
    forward_pass: int,
    counters: np.ndarray,
    sample_shape: Sequence[int],
    threshold: int,
    scale: float,
    dtype: Any,
) -> np.ndarray:
    """(len(counters), *sample_shape) scaled keep-masks in `dtype` (counters: each row's counter word 0);
    needs numba (compiled_fill is None without it)."""
    assert compiled_fill is not None, "loopspec.dropout_kernel needs numba"
    written = np.dtype(dtype) if np.dtype(dtype) in WRITTEN_DTYPES else np.dtype(np.float64)
    out = np.empty((len(counters), math.prod(sample_shape)), written)
    compiled_fill(seed, forward_pass, np.asarray(counters, np.uint64), out.shape[1], threshold, scale, out)
    return out.reshape(len(counters), *sample_shape).astype(dtype, copy=False)
