"""The PyTorch training loop: `python -m torchloop.train --config FILE --out DIR`.

Reads top to bottom like the textbook loop: zero_grad, forward, loss, backward, measure
the gradient norm, step. Everything framework-neutral (data, batch order, records, early
stopping, weight files) comes from loopspec, shared with the JAX backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from loopspec.batching import eval_batches, train_batches
from loopspec.config import Config
from loopspec.run import RunRecorder, monitored_value, prepare_run, validation_metrics
from torchloop.checkpoint import export_weights, import_weights
from torchloop.losses import make_loss
from torchloop.models import build_model
from torchloop.optim import make_optimizer
from torchloop.precision import resolve_device, torch_dtype
from torchloop.schedules import current_momentum, make_scheduler


def train_step(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor,
               dropout_masks: Optional[Sequence[torch.Tensor]] = None) -> dict[str, Any]:
    """One optimizer update; returns loss and gradient norm as tensors (no host sync) and
    the learning rate and momentum the update used."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x, dropout_masks)
    loss = loss_fn(logits, y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads)
    used = {"lr": optimizer.param_groups[0]["lr"], "momentum": current_momentum(optimizer)}
    optimizer.step()
    return {"loss": loss.detach(), "grad_norm": grad_norm, **used}


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int,
             num_classes: int, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    model.eval()
    loss_sum, outputs = 0.0, []
    for rows in eval_batches(len(y), batch_size):
        xb = torch.as_tensor(x[rows], dtype=dtype, device=device)
        yb = torch.as_tensor(y[rows], device=device)
        logits = model(xb)
        loss_sum += loss_fn(logits, yb).item() * len(yb)
        outputs.append(logits.double().cpu().numpy())
    return validation_metrics(loss_sum, np.concatenate(outputs), y, num_classes)


def fit(config: Config, out_dir: str | Path, init_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train as configured; writes config.json, metrics.jsonl, init/final.safetensors to out_dir."""
    setup = prepare_run(config, out_dir, init_path, backend="torch")
    device, dtype = resolve_device(config.train.device), torch_dtype(config.train.dtype)
    data, train_cfg = setup.dataset, config.train

    torch.manual_seed(config.seed)  # framework init and framework-mode dropout
    model = build_model(config.model, data.input_shape, setup.out_dim).to(device=device, dtype=dtype)
    if setup.initial_weights is not None:  # after the cast, so float64 runs get float64 weights
        import_weights(model, setup.initial_weights)
    loss_fn = make_loss(config.loss, data.num_classes, setup.out_dim).to(device=device, dtype=dtype)
    optimizer = make_optimizer(config.optimizer, model.parameters())
    scheduler = make_scheduler(config.schedule, optimizer, setup.schedule_length)
    step_interval, plateau = setup.plan.interval == "step", config.schedule.name == "plateau"

    recorder = RunRecorder(setup)
    recorder.save_initial_weights(export_weights(model))
    step, forward_pass, best_weights = 0, 0, None
    try:
        for epoch in range(1, train_cfg.epochs + 1):
            model.train()
            first_step, outputs = step + 1, []
            for rows in train_batches(len(data.y_train), config.data.batch_size, config.seed, epoch,
                                      config.data.shuffle, config.data.drop_last):
                x = torch.as_tensor(data.x_train[rows], dtype=dtype, device=device)
                y = torch.as_tensor(data.y_train[rows], device=device)
                masks = setup.dropout_masks(forward_pass, len(rows))
                if masks is not None:
                    masks = [torch.as_tensor(m, dtype=dtype, device=device) for m in masks]
                forward_pass += 1
                out = train_step(model, loss_fn, optimizer, x, y, masks)
                if scheduler is not None and step_interval:
                    scheduler.step()
                step += 1
                outputs.append(out)
                if train_cfg.log_every and step % train_cfg.log_every == 0:
                    recorder.log_step(epoch, step, out["loss"].item(), out["lr"], out["grad_norm"].item())
                if train_cfg.max_steps is not None and step >= train_cfg.max_steps:
                    break
            columns = {
                "loss": torch.stack([o["loss"] for o in outputs]).double().tolist(),
                "lr": [o["lr"] for o in outputs],
                "grad_norm": torch.stack([o["grad_norm"] for o in outputs]).double().tolist(),
                **({"momentum": [o["momentum"] for o in outputs]} if setup.cycles_momentum else {}),
            }
            recorder.record_steps(epoch, first_step, columns)
            val = evaluate(model, loss_fn, data.x_val, data.y_val, config.data.eval_batch_size,
                           data.num_classes, device, dtype)
            train_loss = float(np.mean(columns["loss"]))
            improved = recorder.record_epoch(epoch, step, train_loss, val)
            if plateau:
                scheduler.step(monitored_value(config.schedule.monitor, train_loss, val))
            elif scheduler is not None and not step_interval:
                scheduler.step()
            if improved and recorder.keep_best_weights:
                best_weights = export_weights(model)
            if recorder.should_stop or (train_cfg.max_steps is not None and step >= train_cfg.max_steps):
                break
        restored = best_weights is not None
        return recorder.finish(best_weights if restored else export_weights(model), step, restored)
    finally:
        recorder.close()


if __name__ == "__main__":
    from torchloop.cli import main

    raise SystemExit(main())
