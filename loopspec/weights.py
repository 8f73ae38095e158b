"""Weights in the canonical layout (torch `state_dict` names and layouts): init and safetensors I/O.

Both backends save and load weights in this layout (Linear weight (out, in), Conv2d weight
OIHW, BatchNorm running statistics and num_batches_tracked), so a file either backend
writes loads into the other and into a plain `torch.nn.Module.load_state_dict`. The names
and shapes each model has are in loopspec/models.py.
"""

from __future__ import annotations

import json
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
    for name, shape in shapes.items():  # drawn in the order the model creates its layers (both backends list it)
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
    """Read a safetensors file; with `expected`, check names, shapes, dtypes and values first."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        tensors = load_file(path)
    except TypeError:  # a dtype NumPy lacks: bfloat16
        tensors = read_with_bfloat16(path)
    except (SafetensorError, OSError) as err:
        raise DataError(f"cannot read {path} as safetensors: {err}") from None
    if expected is not None:
        check_weights(tensors, expected, str(path))
    return tensors


SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_with_bfloat16(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file with bfloat16 tensors, read as float32 (exact: bf16 is float32's upper half)."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
            data = handle.read()
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            raw = data[info["data_offsets"][0] : info["data_offsets"][1]]
            if info["dtype"] == "BF16":
                array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, SAFETENSORS_DTYPES[info["dtype"]])
            tensors[name] = array.reshape(info["shape"]).copy()
        return tensors
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read {path} as safetensors: {err}") from None


def check_weights(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], where: str) -> None:
    """Names and shapes as the model has them; floating-point weights (any float dtype is cast),
    integer counters, finite values and a non-negative BatchNorm running variance."""
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
        tensor = tensors[name]
        if tuple(tensor.shape) != tuple(shape):
            raise DataError(f"{where}: {name} has shape {tuple(tensor.shape)}, the model needs {tuple(shape)}")
        counter = name.endswith("num_batches_tracked")
        if counter != np.issubdtype(tensor.dtype, np.integer):
            kind = "an integer count" if counter else "floating-point values (any float dtype is cast)"
            raise DataError(f"{where}: {name} holds {tensor.dtype} values; it must hold {kind}")
        if counter:
            if tensor.min(initial=0) < 0:
                raise DataError(f"{where}: {name} is negative")
            continue
        if not np.isfinite(tensor).all():
            raise DataError(f"{where}: {name} holds {int((~np.isfinite(tensor)).sum())} NaN/inf values")
        if name.endswith("running_var") and tensor.min(initial=0) < 0:
            raise DataError(f"{where}: {name} holds negative variances (min {tensor.min():.3g})")


def float_dtype(tensors: dict[str, np.ndarray]) -> np.dtype:
    """The dtype of a weight file's floating tensors (its integer BatchNorm counters aside)."""
    return next((value.dtype for value in tensors.values() if value.dtype.kind == "f"), np.dtype(np.float32))
