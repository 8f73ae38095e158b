"""The optax.MultiSteps accumulation path (train.accumulation: multisteps): one jitted micro-step
per micro-batch, optax applying the update on a window's last; JAX-only (torch accumulates by hand,
as the scanned window of flaxloop.train.train_step does)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
import optax

from flaxloop.gradients import MaskFn, replica_gradients
from flaxloop.losses import LossFn
from flaxloop.state import StepMetrics, TrainState, step_metrics

MicroStep = Callable[..., tuple[TrainState, StepMetrics]]


def multisteps_micro_step(
    state: TrainState, micro: dict[str, Any], scale: float, loss_fn: LossFn, masks_fn: Optional[MaskFn] = None
) -> tuple[TrainState, StepMetrics]:
    """One micro-batch under optax.MultiSteps: it accumulates, and applies on the window's last."""
    passes, data = state.forward_passes, micro.get("data")
    loss, grads, batch_stats = replica_gradients(state, state.batch_stats, passes, micro, 1.0, loss_fn, masks_fn, data)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats, forward_passes=state.forward_passes + 1)
    return state, step_metrics(state, loss * scale)


def state_before_skipped_window(before: TrainState, after: TrainState) -> TrainState:
    """The state before a skipped window, with the counters that say where the run is: forward
    passes (dropout keys), the fp16 loss scale (which saw the failure, as torch's GradScaler
    does) and optax.MultiSteps' window count (its trailing-window rule)."""
    state = before.replace(forward_passes=after.forward_passes, loss_scale=after.loss_scale)
    if isinstance(after.opt_state, optax.MultiStepsState):
        state = state.replace(opt_state=before.opt_state._replace(gradient_step=after.opt_state.gradient_step))
    return state


def dispatch_multisteps(
    state: TrainState, micro_step: MicroStep, micro_batches: list[dict[str, Any]], place: Callable[[Any], Any]
) -> tuple[TrainState, StepMetrics]:
    """One window through optax.MultiSteps, read back on the host: it has no in-step guard, so a
    non-finite window is undone here (state_before_skipped_window). Returns the state and metrics."""
    before, losses = state, []
    for micro in micro_batches:
        state, metrics = micro_step(state, place({"tail": micro})["tail"], scale=1.0 / len(micro_batches))
        losses.append(metrics.loss)
    metrics = jax.device_get(metrics)  # the last micro-step's: MultiSteps applied the update there
    loss = np.sum(jax.device_get(losses))
    finite = bool(np.isfinite(loss) and np.isfinite(metrics.grad_norm))
    if not finite:
        state = state_before_skipped_window(before, state)
    return state, metrics._replace(loss=loss, finite=finite)
