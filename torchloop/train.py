"""The PyTorch backend: `python -m torchloop.train --config FILE --out DIR`.

The textbook update: zero_grad; per micro-batch autocast forward, loss / k, scaled backward;
unscale, clip and measure the gradient norm, step, scheduler.step(). The loop around it (epochs,
batches, records, early stopping) is loopspec/loop.py, shared with the JAX backend; this module
holds only what torch does. flaxloop/train.py has the same functions in the same order.
"""

# ruff: noqa: E402  (the signal handlers below come before the framework imports)
from __future__ import annotations

if __name__ == "__main__":  # before the heavy imports: Ctrl-C during them is one line, not a traceback
    from loopspec.cli import exit_quietly_on_signals

    exit_quietly_on_signals("python -m torchloop.train")

import collections
import contextlib
import copy
import math
from typing import Any, Iterator, NamedTuple, Optional, Sequence, cast

import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler

from loopspec.checkpoint import Checkpoint
from loopspec.cli import run_cli
from loopspec.config import Config
from loopspec.dropout import parity_dropout_masks as spec_masks
from loopspec.loop import MicroBatch, Outcome, StepResult, backend_fit
from loopspec.parallel import Placement, replica_shards
from loopspec.run import RunSetup
from torchloop.checkpoint import export_training_state, export_weights, import_weights, load_training_state
from torchloop.dropout import parity_dropout_masks
from torchloop.layers import ParityDropout, dropout_layers, parity_masks
from torchloop.losses import make_loss
from torchloop.models import build_model
from torchloop.optim import decayed_tensors, make_optimizer
from torchloop.parallel import (
    any_replica,
    distributed,
    leave_replica_process,
    mean_over_replicas,
    replica_scope,
    share_buffers,
)
from torchloop.precision import (
    check_precision,
    compute_dtype,
    make_grad_scaler,
    param_dtype,
    resolve_device,
    set_matmul_precision,
)
from torchloop.schedules import current_momentum, make_schedule

# inputs, labels, parity dropout masks (one per ParityDropout in running order; None for a rate-0 one),
# and the loss's weight: this replica's share of the global
# batch's loss times the replica count (DDP averages the replicas' gradients); 1.0 on one device.
TorchMicroBatch = tuple[torch.Tensor, torch.Tensor, Optional[Sequence[Optional[torch.Tensor]]], float]


class StepMetrics(NamedTuple):
    """What one update used and measured; the tensors stay on the device until the update is read back."""

    loss: torch.Tensor
    lr: float
    grad_norm: torch.Tensor
    momentum: Optional[float]
    clipped: Optional[torch.Tensor]
    loss_scale: Optional[float]
    outcome: Optional[Outcome]  # decided in the step; None: applied speculatively, judged when read back


def train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    micro_batches: Sequence[TorchMicroBatch],
    compute_dtype: torch.dtype,
    clip_grad_norm: Optional[float] = None,
    clip_grad_value: Optional[float] = None,
    dropout_layers: Sequence[ParityDropout] = (),
    speculate: bool = False,
) -> StepMetrics:
    """One optimizer update from the mean gradient of the micro-batches (one, without accumulation).

    The step is applied only when the loss and the gradients are finite, decided on the host; with
    fp16 the GradScaler skips an overflowing step itself and backs off. `speculate` (not with fp16):
    the step is applied with no host sync, its outcome left to the read-back (TorchBackend.read undoes
    one that is not finite).
    """
    device_type = next(model.parameters()).device.type
    mixed = compute_dtype in (torch.bfloat16, torch.float16)
    optimizer.zero_grad(set_to_none=True)
    loss: Optional[torch.Tensor] = None
    for index, (x, y, dropout_masks, weight) in enumerate(micro_batches):
        # DDP: only the window's last backward all-reduces the gradients (no_sync covers forward and backward).
        # A model with no_sync is the DistributedDataParallel wrapper (torchloop.parallel).
        last = index == len(micro_batches) - 1
        ddp = cast(nn.parallel.DistributedDataParallel, model)
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else ddp.no_sync():
            with (
                torch.autocast(device_type, dtype=compute_dtype, enabled=mixed),
                parity_masks(dropout_layers, dropout_masks),
            ):
                logits = model(x)
            micro_loss = loss_fn(logits.float() if mixed else logits, y)
            if weight != 1 or len(micro_batches) != 1:  # times 1 and over 1 are exact: two ops saved
                micro_loss = micro_loss * weight / len(micro_batches)
            scaler.scale(micro_loss).backward()
        loss = micro_loss.detach() if loss is None else loss + micro_loss.detach()
    assert loss is not None  # a window has at least one micro-batch
    loss = mean_over_replicas(loss)  # the global batch's loss, the same on every replica
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    clipped = None
    if clip_grad_norm is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)  # returns the norm before clipping
        clipped = clip_grad_norm / (grad_norm + 1e-6) < 1.0  # clip_grad_norm_'s own test
    else:
        grads = [cast(torch.Tensor, p.grad) for p in params]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        if clip_grad_value is not None:
            clipped = torch.stack([grad.abs().max() for grad in grads]).max() > clip_grad_value
            torch.nn.utils.clip_grad_value_(params, clip_grad_value)
    lr, momentum = optimizer.param_groups[0]["lr"], current_momentum(optimizer)
    if speculate:
        optimizer.step()
        return StepMetrics(loss, lr, grad_norm, momentum, clipped, None, None)
    loss_scale = scaler.get_scale() if scaler.is_enabled() else None
    loss_finite = math.isfinite(loss.item())  # on CUDA, waits for the step
    grads_finite = math.isfinite(grad_norm.item())
    outcome: Outcome
    if not loss_finite or not (grads_finite or scaler.is_enabled()):
        outcome = "nonfinite"
    else:
        scaler.step(optimizer)  # with fp16: skipped when the gradients overflowed
        outcome = "applied" if grads_finite else "overflow"
    scaler.update()
    return StepMetrics(loss, lr, grad_norm, momentum, clipped, loss_scale, outcome)


@torch.no_grad()
def eval_step(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, compute: torch.dtype
) -> tuple[float, np.ndarray]:
    """Mean loss and float64 logits of one validation batch."""
    mixed = compute in (torch.bfloat16, torch.float16)
    with torch.autocast(x.device.type, dtype=compute, enabled=mixed):
        logits = model(x)
    logits = logits.float() if mixed else logits
    return loss_fn(logits, y).item(), logits.double().cpu().numpy()


def device_dataset(
    x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The training split on the device once, when it takes at most a quarter of the GPU's memory (on the
    CPU the host tensors are the device's): each step gathers its rows there, with no batch to copy in."""
    if device.type == "cpu":
        return x, y
    _, total = torch.cuda.mem_get_info(device)
    if x.nbytes + y.nbytes > total // 4:
        return None
    return x.to(device), y.to(device)


class Snapshot(NamedTuple):
    """The training state before an update. torch's objects change in place, so an update dispatched
    before the previous one is read back may have to be undone: a non-finite one (skipped), or the
    next one at a stop or a checkpoint of the state after the previous one."""

    tensors: list[torch.Tensor]  # the model's parameters and buffers
    optimizer: dict[torch.Tensor, dict[str, Any]]  # each parameter's optimizer state
    groups: list[dict[str, Any]]  # each parameter group's hyperparameters (schedules set them)
    scheduler: Optional[dict[str, Any]]
    rng: list[torch.Tensor]  # the generators framework-mode dropout draws from


class Dispatched:
    """An update in flight: its window, the state before it, and its metrics (refilled when redone)."""

    def __init__(self, window: Sequence[MicroBatch], before: Optional[Snapshot]):
        self.window, self.before = window, before
        self.metrics: Optional[StepMetrics] = None


def copied(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class TorchBackend:
    """The model, optimizer, scheduler and GradScaler of one run (loopspec.loop.Backend)."""

    name = "torch"
    # Where an update is read back after the next is dispatched. On the CPU torch's ops run as they are
    # called, so there is no device to wait for, and the copy of the state each update in flight keeps
    # cost 4-6% of the default recipe's step on a 2-core CPU (measured, 0.4 ms a step).
    lagged_devices: tuple[str, ...] = ("cuda",)

    @staticmethod
    @contextlib.contextmanager
    def scope(config: Config) -> Iterator[Placement]:
        """Refuse an unusable device, precision or replica count before anything is written; set
        the matmul precision; join torchrun's process group for a data-parallel run."""
        device = resolve_device(config.train.device)
        check_precision(config.train.precision, device)
        set_matmul_precision(config.train.tf32)
        with replica_scope(config.train.devices, device.type) as placement:
            yield placement

    def __init__(self, setup: RunSetup):
        config, data = setup.config, setup.dataset
        self.setup, self.train_cfg = setup, config.train
        self.device, precision = resolve_device(config.train.device), config.train.precision
        self.dtype, self.compute = param_dtype(precision), compute_dtype(precision)
        torch.manual_seed(config.seed)  # framework init and framework-mode dropout
        model = build_model(config.model, data.input_shape, setup.out_dim, setup.models.get("torch"))
        self.model = model.to(device=self.device, dtype=self.dtype)
        if setup.initial_weights is not None:  # after the cast, so float64 runs get float64 weights
            import_weights(self.model, setup.initial_weights)
        probe = torch.zeros((2, *data.input_shape), dtype=self.input_dtype(data.x_train), device=self.device)
        found = dropout_layers(self.model, probe) if setup.parity_dropout_asked else []
        setup.dropout_layers = [(name, shape, rate) for name, shape, rate, _ in found]
        self.dropout_modules = [layer for _, _, _, layer in found]
        self.dropout_names = [name for name, _, _, _ in found]
        self.parity_layers = setup.parity_dropout_layers
        given = setup.losses.get("torch")  # fit(loss=...): (logits, labels) -> the mean loss
        self.loss_fn = given or make_loss(config.loss, data.num_classes, setup.out_dim).to(self.device, self.dtype)
        self.network = distributed(self.model, setup.placement, self.device)  # what trains: DDP or the model
        if setup.placement.replicas > 1:  # framework-mode dropout: each rank draws its own masks
            torch.manual_seed(config.seed + setup.placement.rank)
        self.optimizer = make_optimizer(config.optimizer, decayed_tensors(config.optimizer, self.model))
        self.scheduler = make_schedule(config.schedule, self.optimizer, setup.schedule_horizon)
        self.scaler = make_grad_scaler(precision, config.train.loss_scale, self.device)
        # On the host in the run's dtype (token ids as int64); the training split also on the device when it
        # fits (one device), else each batch moves to the device when it is used.
        self.x_train = torch.as_tensor(data.x_train, dtype=self.input_dtype(data.x_train))
        self.x_val = torch.as_tensor(data.x_val, dtype=self.input_dtype(data.x_val))
        self.y_train, self.y_val = torch.as_tensor(data.y_train), torch.as_tensor(data.y_val)
        one_device = setup.placement.replicas == 1
        self.train_data = device_dataset(self.x_train, self.y_train, self.device) if one_device else None
        # Read an update back after dispatching the next, as JAX does, so the host does not wait for the
        # device; but fp16's GradScaler reads its overflow flags on the host in every step anyway.
        self.readback_lag = int(self.device.type in self.lagged_devices and not self.scaler.is_enabled())
        self.in_flight: collections.deque[Dispatched] = collections.deque()  # dispatched, not yet read back
        self.model.train()  # every module, once; again after each validation (run)
        self.buffers = list(self.model.buffers())  # listed once: walking the modules takes 20-25 us an update

    def input_dtype(self, x: np.ndarray) -> torch.dtype:
        return torch.int64 if np.issubdtype(x.dtype, np.integer) else self.dtype

    def on_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.device, non_blocking=True) for t in tensors]

    def micro_batch(self, micro: MicroBatch) -> TorchMicroBatch:
        """This replica's contiguous shard of the micro-batch, its parity dropout masks (generated on the
        device from the shard's global positions) and its loss weight."""
        placement, rows = self.setup.placement, micro.rows
        shards = replica_shards(rows, self.setup.dataset.y_train, self.setup.config.loss, placement.replicas)
        mine, weight = shards[placement.rank]
        if self.train_data is not None:  # gathered on the device; the indices copied in without a wait
            index = torch.from_numpy(np.ascontiguousarray(rows[mine]))
            if self.device.type == "cuda":
                index = index.pin_memory().to(self.device, non_blocking=True)
            x, y = (part.index_select(0, index) for part in self.train_data)
        else:
            x, y = self.on_device(self.x_train[rows[mine]], self.y_train[rows[mine]])
        masks = None
        if self.parity_layers:
            shard, seed = micro.positions[mine], self.setup.config.seed
            if self.device.type == "cpu":  # loopspec's compiled loop (C or numba; else NumPy) beats torch's int ops
                dtype = torch.empty((), dtype=self.dtype).numpy().dtype
                drawn = spec_masks(seed, self.parity_layers, dtype, micro.forward_pass, np.asarray(shard))
                by_name = {name: torch.from_numpy(mask) for name, mask in drawn.items()}
            else:
                positions = torch.arange(shard.start, shard.stop, shard.step, device=self.device)
                by_name = parity_dropout_masks(seed, self.parity_layers, self.dtype, micro.forward_pass, positions)
            masks = [by_name.get(name) for name in self.dropout_names]
        return x, y, masks, weight * placement.replicas

    def dispatch(self, window: Sequence[MicroBatch]) -> Dispatched:
        handle = Dispatched(window, self.snapshot() if self.readback_lag else None)
        self.run(handle)
        self.in_flight.append(handle)
        return handle

    def run(self, handle: Dispatched) -> None:
        """The update itself, on the current state: its metrics into the handle."""
        if not self.model.training:  # after a validation: each train() call walks every module (37 us)
            self.model.train()
        micro_batches = [self.micro_batch(micro) for micro in handle.window]
        buffers = [buffer.clone() for buffer in self.buffers] if handle.before is None else []
        metrics = train_step(
            self.network,
            self.loss_fn,
            self.optimizer,
            self.scaler,
            micro_batches,
            self.compute,
            self.train_cfg.clip_grad_norm,
            self.train_cfg.clip_grad_value,
            self.dropout_modules,
            speculate=handle.before is not None,
        )
        if metrics.outcome == "nonfinite":  # the window's BatchNorm statistics saw the bad values: undo them
            with torch.no_grad():
                for buffer, saved in zip(self.buffers, buffers):
                    buffer.copy_(saved)
        elif metrics.outcome in ("applied", None) and self.scheduler is not None and self.setup.plan.interval == "step":
            self.scheduler.step()
        share_buffers(self.model)
        handle.metrics = metrics

    def read(self, handle: Dispatched) -> StepResult:
        """The update's result on the host. One applied without a decision that turns out not finite is
        undone here (weights, BatchNorm statistics, optimizer and schedule as before it; the random state
        as after it), and the update dispatched after it is redone from there."""
        while self.in_flight and self.in_flight.popleft() is not handle:
            pass
        m = handle.metrics
        assert m is not None  # filled by run
        outcome = m.outcome
        if outcome is None:
            outcome = "applied" if bool(torch.isfinite(m.loss) & torch.isfinite(m.grad_norm)) else "nonfinite"
            if outcome == "nonfinite":
                assert handle.before is not None  # undecided updates are dispatched with a snapshot
                self.restore(handle.before, rng=False)
                for later in self.in_flight:  # redo it from the state after the skipped update
                    self.set_rng(later.before)
                    later.before = self.snapshot()
                    self.run(later)
        clipped = None if m.clipped is None else bool(m.clipped)
        return StepResult(outcome, m.loss.item(), m.lr, m.grad_norm.item(), m.momentum, clipped, m.loss_scale)

    def rewind(self, handle: Dispatched) -> None:
        """Make the state after `handle`'s update current, dropping the updates dispatched after it."""
        if self.in_flight:
            after = self.in_flight[0].before
            assert after is not None
            self.restore(after)
            self.in_flight.clear()

    def snapshot(self) -> Snapshot:
        with torch.no_grad():
            tensors = [t.detach().clone() for t in (*self.model.parameters(), *self.model.buffers())]
            optimizer = {p: {k: copied(v) for k, v in state.items()} for p, state in self.optimizer.state.items()}
        groups = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        # A scheduler's own attributes are numbers and lists (which it replaces as it steps: copied all the same).
        scheduler = None
        if self.scheduler is not None:
            scheduler = {k: copy.copy(v) for k, v in vars(self.scheduler).items() if k != "optimizer"}
        return Snapshot(tensors, optimizer, groups, scheduler, self.rng_state())

    def restore(self, snapshot: Snapshot, rng: bool = True) -> None:
        with torch.no_grad():
            for live, saved in zip((*self.model.parameters(), *self.model.buffers()), snapshot.tensors):
                live.copy_(saved)
        self.optimizer.state.clear()
        for param, state in snapshot.optimizer.items():
            self.optimizer.state[param] = {k: copied(v) for k, v in state.items()}
        for group, hyperparameters in zip(self.optimizer.param_groups, snapshot.groups):
            group.update(hyperparameters)
        if self.scheduler is not None and snapshot.scheduler is not None:
            vars(self.scheduler).update(snapshot.scheduler)
        if rng:
            self.set_rng(snapshot)

    def rng_state(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        return states + ([torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [])

    def set_rng(self, snapshot: Optional[Snapshot]) -> None:
        assert snapshot is not None
        torch.set_rng_state(snapshot.rng[0])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(snapshot.rng[1], self.device)

    def evaluate(self, rows: slice) -> tuple[float, np.ndarray]:
        self.model.eval()
        x, y = self.on_device(self.x_val[rows], self.y_val[rows])
        return eval_step(self.model, self.loss_fn, x, y, self.compute)

    def end_epoch(self, epochs_done: int, monitored: float) -> None:
        if self.setup.config.schedule.name == "plateau":
            cast(lr_scheduler.ReduceLROnPlateau, self.scheduler).step(monitored)  # make_schedule's for plateau
        elif self.scheduler is not None and self.setup.plan.interval == "epoch":
            self.scheduler.step()

    def export_weights(self) -> dict[str, np.ndarray]:
        return export_weights(self.model)

    def export_state(self, handle: Optional[Dispatched]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state after `handle`'s update: the current one, or the one before the update dispatched after it."""
        scaler = self.scaler if self.scaler.is_enabled() else None
        if handle is None or not self.in_flight:
            return export_training_state(self.model, self.optimizer, self.scheduler, scaler)
        now, after = self.snapshot(), self.in_flight[0].before
        assert after is not None
        self.restore(after)
        try:
            return export_training_state(self.model, self.optimizer, self.scheduler, scaler)
        finally:
            self.restore(now)

    def import_state(self, checkpoint: Checkpoint) -> None:
        load_training_state(
            checkpoint, self.model, self.optimizer, self.scheduler, self.scaler if self.scaler.is_enabled() else None
        )
        if "rng.torch" in checkpoint.tensors and checkpoint.state["backend"] == "torch":  # framework-mode dropout
            torch.set_rng_state(torch.from_numpy(checkpoint.tensors["rng.torch"]))

    def any_replica_interrupted(self, signum: Optional[int]) -> Optional[int]:
        return any_replica(signum)


fit = backend_fit(TorchBackend)

if __name__ == "__main__":
    raise SystemExit(leave_replica_process(run_cli("python -m torchloop.train", "torch", fit)))
