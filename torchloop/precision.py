"""Run dtype and device for the torch backend."""

from __future__ import annotations

import torch

from loopspec.errors import UserError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when available); cuda without a GPU is a start-up error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)
