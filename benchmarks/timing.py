"""Timing shared by both backends' benchmark processes; imports neither torch nor jax."""

from __future__ import annotations

import time
from typing import Any, Callable, Hashable, NamedTuple, Optional, TypeVar

Key = TypeVar("Key", bound=Hashable)


class Timed(NamedTuple):
    """A warmed-up mode: `step(i)` runs `per_call` training steps; `sync()` waits for the device."""

    step: Callable[[int], None]
    sync: Callable[[], None]
    calls: int
    per_call: int
    warmup_seconds: float
    peak_memory_mib: Optional[float] = None  # over the warm-up; None off a GPU


def microseconds_per_step(timed: Timed) -> float:
    """One timed run of `timed.calls` calls, synchronised at both ends."""
    timed.sync()
    start = time.perf_counter()
    for i in range(timed.calls):
        timed.step(i)
    timed.sync()
    return (time.perf_counter() - start) / (timed.calls * timed.per_call) * 1e6


def interleaved_repeats(modes: dict[Key, Timed], repeats: int) -> dict[Key, list[float]]:
    """Microseconds per training step, one sample per repeat per mode. Each repeat runs every
    mode once, in turn, so a slow spell of a shared machine lands on all modes alike rather
    than on whichever ran then."""
    samples: dict[Key, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode, timed in modes.items():
            samples[mode].append(microseconds_per_step(timed))
    return samples


def timed_rows(backend: str, modes: dict[str, Timed], per_step: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per mode: its samples of microseconds per step, warm-up time and peak memory."""
    return [
        {
            "backend": backend,
            "mode": mode,
            "us_per_step": per_step[mode],
            "warmup_seconds": timed.warmup_seconds,
            "peak_memory_mib": timed.peak_memory_mib,
        }
        for mode, timed in modes.items()
    ]
