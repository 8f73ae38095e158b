"""The models as the config describes them, framework-neutral: output width, input checks, and
the name and shape of every tensor in the canonical layout (torch's state_dict).

torchloop/models.py and flaxloop/models.py build these networks; this is what both must have.
"""

from __future__ import annotations

import numpy as np

from loopspec.config import ModelConfig
from loopspec.errors import UserError

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
        raise UserError(
            f"loss bce needs a binary dataset; this one has {num_classes} classes (use cross_entropy or focal)"
        )


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
