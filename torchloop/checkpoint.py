"""Weights in the canonical layout: for torch that is simply the state_dict."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def export_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as NumPy arrays (parameters and BatchNorm buffers)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}


def import_weights(model: nn.Module, tensors: dict[str, np.ndarray]) -> None:
    """Load canonical-layout arrays; load_state_dict casts them to the model's dtype."""
    model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in tensors.items()})
