"""Weights in the canonical layout (torch `state_dict` names and layouts): init and safetensors I/O.

Both backends save and load weights in this layout (Linear weight (out, in), Conv2d weight
OIHW, BatchNorm running statistics and num_batches_tracked), so a file either backend
writes loads into the other and into a plain `torch.nn.Module.load_state_dict`. The names
and shapes each model has are in loopspec/models.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from loopspec.errors import DataError
from loopspec.files import atomic_path


def canonical_init(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """torch's default initialisation, drawn in NumPy so both backends start identical.

    Linear and Conv2d weights and biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what
    kaiming_uniform_(a=sqrt(5)) reduces to); BatchNorm starts at weight 1, bias 0.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1417]))
    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        layer, leaf = name.rsplit(".", 1)
        is_norm = f"{layer}.running_mean" in shapes
        if leaf == "num_batches_tracked":
            weights[name] = np.zeros((), dtype=np.int64)
        elif is_norm:
            weights[name] = np.ones(shape) if leaf in ("weight", "running_var") else np.zeros(shape)
        else:
            fan_in = math.prod(shapes[f"{layer}.weight"][1:])
            bound = 1.0 / math.sqrt(fan_in)
            weights[name] = rng.uniform(-bound, bound, size=shape)
    return weights


def save_weights(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically: a crash leaves the old file or none, never half of one."""
    arrays = {name: np.array(value, order="C") for name, value in tensors.items()}  # keeps 0-d shapes
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)


def load_weights(path: str | Path, expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Read a safetensors file; with `expected`, check names and shapes first."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file not found: {path}")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise DataError(f"cannot read {path} as safetensors: {err}") from None
    if expected is not None:
        check_weights(tensors, expected, str(path))
    return tensors


def check_weights(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], where: str) -> None:
    missing = [name for name in expected if name not in tensors]
    unexpected = [name for name in tensors if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise DataError(f"{where} does not fit this model: {'; '.join(parts)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise DataError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, the model needs {tuple(shape)}")
