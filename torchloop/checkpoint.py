"""Weights in the canonical layout: for torch that is simply the state_dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from loopspec.checkpoint import Checkpoint, hyperparameter_state, resolve_resume
from loopspec.checkpoint_checks import check_fits
from loopspec.config import config_from_dict, schedule_interval
from loopspec.errors import UserError
from torchloop.models import model_tensors, tied_names
from torchloop.schedules import current_momentum


def export_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as NumPy arrays (parameters and BatchNorm buffers), a tied tensor once."""
    tied = tied_names(model)
    return {
        name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items() if name not in tied
    }


def import_weights(model: nn.Module, tensors: dict[str, np.ndarray]) -> None:
    """Load canonical-layout arrays; load_state_dict casts them to the model's dtype. A tied name
    takes its first name's tensor (a full state_dict with both is taken as well)."""
    state = {name: torch.from_numpy(np.asarray(value)) for name, value in tensors.items()}
    for alias, name in tied_names(model).items():
        if name in state:
            state.setdefault(alias, state[name])
    model.load_state_dict(state)


# ----------------------------------------------------------------------------- the training state
# Optimizer slots under torch's names: optimizer.<parameter name>.<slot>, in the parameter's layout.


def parameter_names_in_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the order the optimizer's state numbers them: group by group (decay on
    matrices only puts the biases and norms in a second group)."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def export_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, np.ndarray], int]:
    """The optimizer's per-parameter buffers by parameter name, and its step count."""
    names = parameter_names_in_groups(model, optimizer)
    tensors, steps = {}, 0
    for index, slots in optimizer.state_dict()["state"].items():
        for slot, value in slots.items():
            if slot == "step":
                steps = int(value)
            else:
                tensors[f"{names[index]}.{slot}"] = value.detach().cpu().numpy().copy()
    return tensors, steps


def import_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, np.ndarray], steps: int
) -> None:
    """Load buffers by parameter name (absent ones stay absent: torch's SGD has no momentum buffer
    before its first step), with `step` for the optimizers that count."""
    counts = not isinstance(optimizer, torch.optim.SGD)  # SGD keeps no step count
    state: dict[int, dict[str, torch.Tensor]] = {}
    params = dict(model.named_parameters())
    for index, name in enumerate(parameter_names_in_groups(model, optimizer)):
        param = params[name]
        slots = {key.rsplit(".", 1)[1]: value for key, value in tensors.items() if key.rsplit(".", 1)[0] == name}
        entry = {slot: torch.as_tensor(value, dtype=param.dtype, device=param.device) for slot, value in slots.items()}
        if entry:
            state[index] = {**entry, "step": torch.tensor(float(steps))} if counts else entry
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def export_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None, scaler: Any = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Plain torch objects in the checkpoint layout both backends read: model.*, optimizer.* and
    rng.torch tensors, and the JSON state (the learning rate and momentum the next update uses, a
    ReduceLROnPlateau's counters, the GradScaler's scale)."""
    tensors = {f"model.{name}": value for name, value in export_weights(model).items()}
    tensors.update({f"optimizer.{name}": value for name, value in export_optimizer(model, optimizer)[0].items()})
    tensors["rng.torch"] = torch.get_rng_state().numpy()
    plateau = scheduler if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else None
    loss_scale = None if scaler is None else (scaler.get_scale(), scaler._get_growth_tracker())
    lr, momentum = optimizer.param_groups[0]["lr"], current_momentum(optimizer)
    return tensors, hyperparameter_state(lr, momentum, plateau, loss_scale)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, momentum: Optional[float]) -> None:
    """The learning rate (and the momentum or beta1 OneCycle cycles) the next update uses."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if momentum is not None:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum


def fits_model(checkpoint: Checkpoint, model: nn.Module) -> None:
    """The checkpoint's tensors against this module's state_dict and its config's optimizer, one line
    (loopspec.checkpoint_checks.CheckpointError) where they do not fit."""
    shapes = model_tensors(model)
    parameters = [name for name, _ in model.named_parameters()]
    check_fits(checkpoint, config_from_dict(checkpoint.state["config"]), shapes, parameters)


def load_training_state(
    checkpoint: Checkpoint | str | Path,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
) -> dict[str, Any]:
    """Load a checkpoint written by either backend into plain torch objects built as the checkpoint's
    config describes (torchloop.models.build_model, torchloop.optim.make_optimizer, ...): the model's
    state_dict, the optimizer's buffers, step and learning rate, the scheduler's position (and
    plateau counters), the GradScaler's scale. `checkpoint` may be a checkpoint or a run directory
    (its newest checkpoint). Returns the checkpoint's position (epoch, window, step, ...)."""
    if not isinstance(checkpoint, Checkpoint):
        resolved = resolve_resume(checkpoint, Path(checkpoint), fits=lambda found: fits_model(found, model))
        if resolved is None:  # "auto" with nothing to resume from
            raise UserError(f"no checkpoint to load in {checkpoint}; pass a checkpoint or a run directory that has one")
        checkpoint = resolved
    else:
        fits_model(checkpoint, model)
    position, state = checkpoint.state["position"], checkpoint.state
    import_weights(model, checkpoint.prefixed("model"))
    if optimizer is not None:
        import_optimizer(model, optimizer, checkpoint.prefixed("optimizer"), position["step"])
        set_hyperparameters(optimizer, state["hyperparameters"]["lr"], state["hyperparameters"]["momentum"])
    if scheduler is not None:  # torch steps a scheduler once per applied update or once per validation
        per_step = schedule_interval(config_from_dict(state["config"]).schedule) == "step"
        lrs = [group["lr"] for group in scheduler.optimizer.param_groups]
        scheduler.load_state_dict(
            {
                **scheduler.state_dict(),
                "last_epoch": position["step"] if per_step else position["epoch"] - 1,
                "_last_lr": lrs,
                **state.get("plateau", {}),
            }
        )
    if scaler is not None and "loss_scale" in state:
        scale = state["loss_scale"]
        scaler.load_state_dict(
            {**scaler.state_dict(), "scale": scale["scale"], "_growth_tracker": scale["growth_tracker"]}
        )
    return position
