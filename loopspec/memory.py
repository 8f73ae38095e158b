"""A sanity bound on sizes: a run whose data or model cannot fit in memory is refused before it starts.

The estimate is deliberately rough (within a small factor): float64 data as loaded, split and
cast (three copies); weights, gradients and up to three optimizer buffers per weight; one
batch's activations kept for the backward pass, and their gradients. Its job is to turn `num_samples: 1e12` or
`hidden: [1e9]` into one line instead of a MemoryError (or the kernel's OOM killer) minutes in.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from loopspec.config import Config
from loopspec.errors import ConfigError
from loopspec.models import activations_per_sample

GENERATED_FEATURES = {
    "intrusion": lambda data: (41,),
    "synthetic_images": lambda data: (data.channels,) + (data.image_size,) * 2,
}
DATA_COPIES = 3  # generated or read, split, cast to the run's dtype
PER_WEIGHT = 5  # weight, gradient, and up to three optimizer buffers (AMSGrad)


def available_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo, else physical memory; None when neither can be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(what: str, needed: float, fix: str) -> None:
    available = available_bytes()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} needs about {needed / 2**30:.3g} GiB but this machine has {available / 2**30:.3g} GiB "
            f"available; {fix}"
        )


def check_generated_data(config: Config) -> None:
    """Before a dataset is generated: its samples, in float64, as they are copied."""
    data = config.data
    if data.name not in GENERATED_FEATURES:
        return
    features = math.prod(GENERATED_FEATURES[data.name](data))
    check_fits(
        f"data.num_samples {data.num_samples} of {features} features",
        data.num_samples * features * 8 * DATA_COPIES,
        "lower data.num_samples",
    )


def check_model_memory(
    config: Config, shapes: dict[str, tuple[int, ...]], input_shape: tuple[int, ...], num_train: int
) -> None:
    """Weights with their optimizer state, and one training batch's activations."""
    weights = sum(math.prod(shape) for shape in shapes.values())
    batch = min(config.data.batch_size, num_train)
    needed = (weights * PER_WEIGHT + batch * activations_per_sample(config.model, input_shape, weights) * 2) * 8
    check_fits(
        f"the model ({weights:,} weights) with batches of {batch}",
        needed,
        "use a narrower model or a smaller data.batch_size",
    )
