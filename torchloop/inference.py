"""A trained network back from its weights: the nn.Module in eval mode, and its logits."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from loopspec.models import output_dim
from loopspec.weights import float_dtype
from torchloop.checkpoint import import_weights
from torchloop.models import build_model


def load_model(run: Any, weights: dict[str, np.ndarray]) -> nn.Module:
    """The run's architecture (a loopspec.results.Run) with `weights`, in their dtype, in eval mode (a
    module given to fit or load_run is copied, not changed)."""
    out_dim = output_dim(run.config.loss.name, run.num_classes)
    dtype = torch.float64 if float_dtype(weights) == np.float64 else torch.float32
    given = run.models.get("torch")
    model = build_model(run.config.model, run.input_shape, out_dim, None if given is None else copy.deepcopy(given))
    model = model.to(dtype=dtype)
    import_weights(model, weights)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Logits (float64 NumPy) of an eval-mode model for a batch (N, *input_shape)."""
    parameter = next(model.parameters())
    integer = np.issubdtype(np.asarray(inputs).dtype, np.integer)  # token ids stay integers
    dtype = torch.int64 if integer else parameter.dtype
    logits = model(torch.as_tensor(inputs, dtype=dtype, device=parameter.device))
    return logits.double().cpu().numpy()
