"""Precision and device for the torch backend: autocast dtypes, the fp16 GradScaler, TF32."""

from __future__ import annotations

import torch

from loopspec.config import LossScaleConfig
from loopspec.errors import UserError

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
MIXED = ("bf16", "fp16")


def param_dtype(precision: str) -> torch.dtype:
    """Weights and optimizer state: float64 for fp64, float32 otherwise (mixed precision's master copy)."""
    return torch.float64 if precision == "fp64" else torch.float32


def compute_dtype(precision: str) -> torch.dtype:
    return COMPUTE_DTYPES[precision]


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when available); cuda without a GPU is a start-up error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but torch sees no CUDA device; use cpu or auto")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """Fail at start-up, not mid-run, when this device cannot run the requested precision."""
    if precision not in MIXED:
        return
    alternatives = "use " + ", ".join(p for p in ("fp32", *MIXED) if p != precision)
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"train.precision bf16 needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
            f"has none: {alternatives}"
        )
    try:
        with torch.autocast(device.type, dtype=compute_dtype(precision)):
            probe = torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
        if probe.dtype != compute_dtype(precision):
            raise RuntimeError(f"autocast produced {probe.dtype}")
        if precision == "fp16":
            torch.amp.GradScaler(device.type)
    except (RuntimeError, ValueError) as err:
        raise UserError(
            f"train.precision {precision} is not available for torch on {device.type} ({err}); {alternatives}"
        ) from None


def set_matmul_precision(tf32: bool) -> None:
    """fp32 matmuls and convolutions on a GPU: full float32 (strict parity) or TF32 (speed)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def make_grad_scaler(precision: str, cfg: LossScaleConfig, device: torch.device) -> torch.amp.GradScaler:
    """torch.amp.GradScaler for fp16; disabled (a pass-through) for every other precision."""
    return torch.amp.GradScaler(
        device.type,
        init_scale=cfg.init_scale,
        growth_factor=cfg.growth_factor,
        backoff_factor=cfg.backoff_factor,
        growth_interval=cfg.growth_interval,
        enabled=precision == "fp16",
    )
