"""The torch half of benchmarks.throughput (run in its own process by that module).

Modes: `eager` (torchloop.train.train_step, as the training loop calls it), `compile` (the
same with the model under torch.compile), `cuda_graph` (torch.compile mode="reduce-overhead",
CUDA only); each with a `bare_` twin: the textbook five lines on the same nn.Module
(zero_grad, autocast forward, loss, scaled backward, step), no library code around it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Optional

import torch

from benchmarks.timing import Timed, interleaved_repeats, timed_rows
from benchmarks.workloads import workload_batches, workload_config
from torchloop.losses import make_loss
from torchloop.models import build_model
from torchloop.optim import decayed_tensors, make_optimizer
from torchloop.precision import compute_dtype, make_grad_scaler, param_dtype, resolve_device, set_matmul_precision
from torchloop.train import train_step

MODES = ("bare_eager", "eager", "bare_compile", "compile", "bare_cuda_graph", "cuda_graph")


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """Measured FLOP/s of a square matmul: the denominator of "share of peak"."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    reps = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2.0 * size**3 * reps / (time.perf_counter() - start)


def mode_step(
    mode: str,
    config: Any,
    input_shape: tuple[int, ...],
    out_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    precision: str,
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """A fresh model, optimizer and scaler, and the step of `mode` on them."""
    low = compute_dtype(precision)
    torch.manual_seed(0)
    model = build_model(config.model, input_shape, out_dim).to(device=device, dtype=dtype).train()
    if "compile" in mode:
        model = torch.compile(model)
    elif "cuda_graph" in mode:
        model = torch.compile(model, mode="reduce-overhead")
    loss_fn = make_loss(config.loss, max(out_dim, 2), out_dim).to(device=device, dtype=dtype)
    optimizer = make_optimizer(config.optimizer, decayed_tensors(config.optimizer, model))
    scaler = make_grad_scaler(precision, config.train.loss_scale, device)
    mixed = low in (torch.bfloat16, torch.float16)

    def bare(xb: torch.Tensor, yb: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=low, enabled=mixed):
            logits = model(xb)
        loss = loss_fn(logits.float() if mixed else logits, yb)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def library(xb: torch.Tensor, yb: torch.Tensor) -> None:
        train_step(model, loss_fn, optimizer, scaler, [(xb, yb, None, 1.0)], low)

    return bare if mode.startswith("bare") else library


def prepare(
    model_name: str,
    batch_size: int,
    precision: str,
    device_name: str,
    modes: list[str],
    steps: int,
    warmup: int,
    width: Optional[int] = None,
) -> dict[str, Timed]:
    """Every mode built on the workload's batches (on the device) and warmed up, ready to time."""
    config = workload_config(model_name, batch_size, precision, device_name, width)
    device = resolve_device(device_name)
    set_matmul_precision(config.train.tf32)
    x, y, out_dim, input_shape = workload_batches(config, min(steps, 16))
    dtype = param_dtype(precision)
    batches = [
        (
            torch.as_tensor(xb, dtype=None if xb.dtype.kind == "i" else dtype, device=device),
            torch.as_tensor(yb, device=device),
        )
        for xb, yb in zip(x, y)
    ]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timed = {}
    for mode in modes:
        if "cuda_graph" in mode and device.type != "cuda":
            continue
        step = mode_step(mode, config, input_shape, out_dim, device, dtype, precision)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for i in range(warmup):
            step(*batches[i % len(batches)])
        sync()
        timed[mode] = Timed(
            lambda i, step=step: step(*batches[i % len(batches)]),
            sync,
            steps,
            1,
            time.perf_counter() - started,
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        )
    return timed


def run(
    model_name: str,
    batch_size: int,
    precision: str,
    device_name: str,
    modes: list[str],
    steps: int,
    warmup: int,
    repeats: int,
    width: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Every mode prepared, then timed in interleaved repeats: one row per mode."""
    with scope(precision, device_name):
        timed = prepare(model_name, batch_size, precision, device_name, modes, steps, warmup, width)
        return timed_rows("torch", timed, interleaved_repeats(timed, repeats))


def scope(precision: str, device_name: str) -> ContextManager[Any]:
    """What prepared steps must be timed inside: nothing for torch (prepare sets the matmul precision)."""
    return contextlib.nullcontext()


def peak_flops(precision: str, device_name: str) -> float:
    device = resolve_device(device_name)
    return matmul_peak(device, compute_dtype(precision) if precision != "fp64" else torch.float64)


def version() -> str:
    return f"torch {torch.__version__}"


def device_label(device_name: str) -> str:
    device = resolve_device(device_name)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
