"""The PyTorch training loop: `python -m torchloop.train --config FILE --out DIR`.

Reads top to bottom like the textbook loop: zero_grad, forward, loss / k, backward (k
micro-batches when accumulating), clip and measure the gradient norm, step, schedule. Everything framework-neutral (data, batch order, records, early
stopping, weight files) comes from loopspec, shared with the JAX backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from loopspec.batching import eval_batches, train_batches, update_windows
from loopspec.config import Config
from loopspec.run import RunRecorder, monitored_value, prepare_run, validation_metrics
from torchloop.checkpoint import export_weights, import_weights
from torchloop.losses import make_loss
from torchloop.models import build_model
from torchloop.optim import make_optimizer
from torchloop.precision import (
    check_precision,
    compute_dtype,
    make_grad_scaler,
    param_dtype,
    resolve_device,
    set_matmul_precision,
)
from torchloop.schedules import current_momentum, make_scheduler


MicroBatch = tuple[torch.Tensor, torch.Tensor, Optional[Sequence[torch.Tensor]]]


def train_step(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, micro_batches: Sequence[MicroBatch], compute_dtype: torch.dtype,
               clip_grad_norm: Optional[float] = None, clip_grad_value: Optional[float] = None) -> dict[str, Any]:
    """One optimizer update from the mean gradient of the micro-batches (one, without accumulation).

    zero_grad; per micro-batch: autocast forward, float32 loss / k, scaled backward; then
    unscale, clip, step, update. The step is applied only when the loss is finite and the
    gradients are (with fp16 the GradScaler skips an overflowing step itself); the caller
    decides what a non-finite loss means.
    """
    device_type = next(model.parameters()).device.type
    mixed = compute_dtype in (torch.bfloat16, torch.float16)
    optimizer.zero_grad(set_to_none=True)
    loss = None
    for x, y, dropout_masks in micro_batches:
        with torch.autocast(device_type, dtype=compute_dtype, enabled=mixed):
            logits = model(x, dropout_masks)
        micro_loss = loss_fn(logits.float() if mixed else logits, y) / len(micro_batches)
        scaler.scale(micro_loss).backward()
        loss = micro_loss.detach() if loss is None else loss + micro_loss.detach()
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    clipped = None
    if clip_grad_norm is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)  # returns the norm before clipping
        clipped = bool(clip_grad_norm / (grad_norm + 1e-6) < 1.0)  # clip_grad_norm_'s own test
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if clip_grad_value is not None:
            clipped = bool(max(p.grad.abs().max() for p in params) > clip_grad_value)
            torch.nn.utils.clip_grad_value_(params, clip_grad_value)
    used = {"lr": optimizer.param_groups[0]["lr"], "momentum": current_momentum(optimizer),
            "loss_scale": scaler.get_scale() if scaler.is_enabled() else None}
    loss_finite = bool(torch.isfinite(loss))  # one host sync per update
    grads_finite = bool(torch.isfinite(grad_norm))
    if loss_finite and (grads_finite or scaler.is_enabled()):
        scaler.step(optimizer)  # with fp16: skipped when the gradients overflowed
    scaler.update()
    return {"loss": loss.item(), "grad_norm": grad_norm.item(), "clipped": clipped, **used,
            "finite": loss_finite and (grads_finite or scaler.is_enabled()),
            "overflow": scaler.is_enabled() and not grads_finite}


def batchnorm_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the running statistics, to undo a skipped update's forward passes."""
    return [buffer.clone() for buffer in model.buffers()]


def restore_buffers(model: nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for buffer, copy in zip(model.buffers(), saved):
            buffer.copy_(copy)


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int,
             num_classes: int, device: torch.device, dtype: torch.dtype,
             compute: Optional[torch.dtype] = None) -> dict[str, float]:
    model.eval()
    mixed = compute in (torch.bfloat16, torch.float16)
    loss_sum, outputs = 0.0, []
    for rows in eval_batches(len(y), batch_size):
        xb = torch.as_tensor(x[rows], dtype=dtype, device=device)
        yb = torch.as_tensor(y[rows], device=device)
        with torch.autocast(device.type, dtype=compute or dtype, enabled=mixed):
            logits = model(xb)
        logits = logits.float() if mixed else logits
        loss_sum += loss_fn(logits, yb).item() * len(yb)
        outputs.append(logits.double().cpu().numpy())
    return validation_metrics(loss_sum, np.concatenate(outputs), y, num_classes)


def fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train as configured; writes config.json, metrics.jsonl, init/final.safetensors to out_dir."""
    setup = prepare_run(config, out_dir, init_path, backend="torch")
    device, precision = resolve_device(config.train.device), config.train.precision
    check_precision(precision, device)
    set_matmul_precision(config.train.tf32)
    dtype, low_precision = param_dtype(precision), compute_dtype(precision)
    data, train_cfg = setup.dataset, config.train

    torch.manual_seed(config.seed)  # framework init and framework-mode dropout
    model = build_model(config.model, data.input_shape, setup.out_dim).to(device=device, dtype=dtype)
    if setup.initial_weights is not None:  # after the cast, so float64 runs get float64 weights
        import_weights(model, setup.initial_weights)
    loss_fn = make_loss(config.loss, data.num_classes, setup.out_dim).to(device=device, dtype=dtype)
    optimizer = make_optimizer(config.optimizer, model.parameters())
    scheduler = make_scheduler(config.schedule, optimizer, setup.schedule_length)
    scaler = make_grad_scaler(precision, train_cfg.loss_scale, device)
    step_interval, plateau = setup.plan.interval == "step", config.schedule.name == "plateau"

    recorder = RunRecorder(setup)
    recorder.save_initial_weights(export_weights(model))
    step, forward_pass, best_weights = 0, 0, None
    try:
        for epoch in range(1, train_cfg.epochs + 1):
            model.train()
            batches = train_batches(len(data.y_train), config.data.batch_size, config.seed, epoch,
                                    config.data.shuffle, config.data.drop_last)
            for window in update_windows(batches, train_cfg.accumulation_steps):
                micro_batches = []
                for rows in window:
                    masks = setup.dropout_masks(forward_pass, len(rows))
                    forward_pass += 1
                    micro_batches.append((
                        torch.as_tensor(data.x_train[rows], dtype=dtype, device=device),
                        torch.as_tensor(data.y_train[rows], device=device),
                        None if masks is None else [torch.as_tensor(m, dtype=dtype, device=device) for m in masks],
                    ))
                saved_buffers = batchnorm_buffers(model)
                out = train_step(model, loss_fn, optimizer, scaler, micro_batches, low_precision,
                                 train_cfg.clip_grad_norm, train_cfg.clip_grad_value)
                if out["finite"] and out["overflow"]:  # fp16: the GradScaler skipped the step and backed off
                    recorder.overflow_skip(epoch, step, out["lr"], out["loss_scale"])
                    continue
                if not out["finite"]:
                    restore_buffers(model, saved_buffers)
                    bad_inputs = any(not np.isfinite(data.x_train[rows]).all() for rows in window)
                    recorder.nonfinite_update(epoch, step, out["lr"], out["loss"], out["grad_norm"], bad_inputs,
                                              lambda: export_weights(model))
                    continue
                if scheduler is not None and step_interval:
                    scheduler.step()
                step += 1
                recorder.record_update(epoch, step, setup.step_values(out))
                if recorder.reached_max_steps(step):
                    break
            val = evaluate(model, loss_fn, data.x_val, data.y_val, config.data.eval_batch_size,
                           data.num_classes, device, dtype, low_precision)
            improved = recorder.record_epoch(epoch, step, val)
            if plateau:
                scheduler.step(monitored_value(config.schedule.monitor, recorder.train_loss, val))
            elif scheduler is not None and not step_interval:
                scheduler.step()
            if improved and recorder.keep_best_weights:
                best_weights = export_weights(model)
            if recorder.should_stop or recorder.reached_max_steps(step):
                break
        restored = best_weights is not None
        return recorder.finish(best_weights if restored else export_weights(model), step, restored)
    finally:
        recorder.close()


if __name__ == "__main__":
    from torchloop.cli import main

    raise SystemExit(main())
