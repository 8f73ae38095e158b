"""Timing shared by both backends' benchmark processes; imports neither torch nor jax."""

from __future__ import annotations

import time
from typing import Callable, NamedTuple


class Timed(NamedTuple):
    """A warmed-up mode: `step(i)` runs `per_call` training steps; `sync()` waits for the device."""

    step: Callable[[int], None]
    sync: Callable[[], None]
    calls: int
    per_call: int
    warmup_seconds: float


def microseconds_per_step(timed: Timed) -> float:
    """One timed run of `timed.calls` calls, synchronised at both ends."""
    timed.sync()
    start = time.perf_counter()
    for i in range(timed.calls):
        timed.step(i)
    timed.sync()
    return (time.perf_counter() - start) / (timed.calls * timed.per_call) * 1e6


def interleaved_repeats(modes: dict[str, Timed], repeats: int) -> dict[str, list[float]]:
    """Microseconds per training step, one sample per repeat per mode. Each repeat runs every
    mode once, in turn, so a slow spell of a shared machine lands on all modes alike rather
    than on whichever ran then."""
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode, timed in modes.items():
            samples[mode].append(microseconds_per_step(timed))
    return samples
