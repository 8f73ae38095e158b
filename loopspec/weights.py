"""The canonical weight layout: torch `state_dict` names, shapes and layouts.

Both backends save and load weights in this layout (Linear weight (out, in), Conv2d weight
OIHW, BatchNorm running statistics and num_batches_tracked), so a file either backend
writes loads into the other and into a plain `torch.nn.Module.load_state_dict`.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from loopspec.config import ModelConfig
from loopspec.errors import DataError, UserError

BINARY_LOGIT_LOSSES = ("bce", "focal")


def output_dim(loss_name: str, num_classes: int) -> int:
    """One logit for binary BCE/focal; one per class otherwise."""
    return 1 if loss_name in BINARY_LOGIT_LOSSES and num_classes == 2 else num_classes


def check_model_input(model: ModelConfig, input_shape: tuple[int, ...], loss_name: str, num_classes: int) -> None:
    if model.name == "cnn":
        if len(input_shape) != 3:
            raise UserError(f"model cnn needs images (N, C, H, W); this dataset gives samples of shape {input_shape}")
        if min(input_shape[1:]) < 8:
            raise UserError(f"model cnn halves the image three times and needs H, W >= 8; got {input_shape[1:]}")
    if loss_name == "bce" and num_classes > 2:
        raise UserError(f"loss bce needs a binary dataset; this one has {num_classes} classes (use cross_entropy or focal)")


def state_dict_shapes(model: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the model's torch state_dict, in registration order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (fan_out, fan_in)
        if bias:
            shapes[f"{name}.bias"] = (fan_out,)

    def batchnorm(name: str, features: int) -> None:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{leaf}"] = (features,)
        shapes[f"{name}.num_batches_tracked"] = ()

    flat = int(np.prod(input_shape))
    if model.name == "mlp":
        width = flat
        for i, hidden in enumerate(model.hidden):
            linear(f"blocks.{i}.linear", width, hidden, model.bias_before_norm)
            batchnorm(f"blocks.{i}.norm", hidden)
            width = hidden
        linear("head", width, out_dim)
    elif model.name == "fashion_mlp":
        linear("linear_relu_stack.0", flat, 512)
        linear("linear_relu_stack.2", 512, 512)
        linear("linear_relu_stack.4", 512, out_dim)
    elif model.name == "cnn":
        channels, height, width = input_shape
        for i, out_channels in enumerate(model.channels):
            shapes[f"features.{i}.conv.weight"] = (out_channels, channels, 3, 3)
            if model.bias_before_norm:
                shapes[f"features.{i}.conv.bias"] = (out_channels,)
            batchnorm(f"features.{i}.norm", out_channels)
            channels, height, width = out_channels, height // 2, width // 2
        linear("classifier", channels * height * width, out_dim)
    else:
        raise ValueError(model.name)
    return shapes


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.array(value, order="C") for name, value in tensors.items()}  # keeps 0-d shapes
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(arrays, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
