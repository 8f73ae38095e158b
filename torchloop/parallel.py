"""Data parallelism with torch's own engine: DistributedDataParallel over torchrun's processes
(gloo on CPU, NCCL on CUDA), one replica per process; loopspec.parallel says which rows each
replica takes and what its loss weighs."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from loopspec.errors import UserError
from loopspec.parallel import Placement


def torchrun_hint(devices: int | str) -> str:
    count = "N" if devices == "auto" else devices
    return f"torchrun --nproc_per_node {count} -m torchloop.train ... (README: Data-parallel training)"


@contextlib.contextmanager
def replica_scope(devices: int | str, device_type: str) -> Iterator[Placement]:
    """Join torchrun's process group for the run (one replica per process); a single process
    without torchrun is the one replica."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if devices not in (1, "auto"):
            raise UserError(f"train.devices is {devices}: launch torch with {torchrun_hint(devices)}")
        yield Placement()
        return
    if devices != "auto" and devices != world:
        raise UserError(f"train.devices is {devices} but torchrun started {world} processes; make them equal")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    try:
        yield Placement(dist.get_rank(), world)
        # Every rank done before any tears its group down (a failed rank skips it: torchrun stops the others)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def leave_replica_process(code: int) -> int:
    """The exit code of a command-line run; a torchrun rank leaves with it at once (os._exit), after
    flushing its output. gloo's worker and socket threads outlive destroy_process_group (nothing in
    torch joins them) and run on through the interpreter's teardown, where a rank under load aborted
    now and then ("terminate called without an active exception" after a finished run: 2 of 92 runs
    before the barrier above, then once in make test and once in CI). Skipping the teardown removes
    that window; every file of the run is closed by then."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return code
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def distributed(model: nn.Module, placement: Placement, device: torch.device) -> nn.Module:
    """DDP around the model when there are replicas. Buffers are not broadcast before each forward, as
    DDP does by default: rank 0's are broadcast after each update instead (share_buffers), so every
    rank validates with the same BatchNorm statistics."""
    if placement.replicas == 1:
        return model
    device_ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the switch (broadcast_buffers warns); its sync at init copies rank 0's
    # buffers, which every rank already holds (one canonical init or one checkpoint)
    if "forward_sync_buffers" in inspect.signature(ddp).parameters:
        return ddp(model, device_ids=device_ids, forward_sync_buffers=False)
    return ddp(model, device_ids=device_ids, broadcast_buffers=False)


def share_buffers(model: nn.Module) -> None:
    """Every replica takes rank 0's BatchNorm buffers (DDP's semantics: rank 0's statistics rule)."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def mean_over_replicas(value: torch.Tensor) -> torch.Tensor:
    """The sum over replicas of each one's weighted share, divided by the replica count (as DDP averages)."""
    if not dist.is_initialized():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def any_replica(signum: Optional[int]) -> Optional[int]:
    """The largest signal number any replica saw (0: none)."""
    if not dist.is_initialized():
        return signum
    flag = torch.tensor([signum or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None
