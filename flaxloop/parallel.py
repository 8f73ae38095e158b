"""Data parallelism with JAX's own engine: one process, `jit` over a Mesh of N devices with the
replica axis of each batch sharded over it (NamedSharding), mirroring torch DDP step for step.
On CPU the N devices are host devices (jax_num_cpu_devices, set before JAX starts its backend)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from loopspec.parallel import Placement, resolve_replicas

AXIS = "data"


def request_cpu_devices(devices: int | str, device_name: str) -> None:
    """Ask for N host devices before JAX starts its CPU backend (afterwards it is too late: the
    count stays, and replica_scope says how to set it)."""
    if device_name != "cpu" or devices in (1, "auto"):
        return
    try:
        # jax.config's flags are attributes at runtime that its type stubs do not declare
        current = jax.config.jax_num_cpu_devices  # type: ignore[attr-defined]
        jax.config.update("jax_num_cpu_devices", max(int(devices), current))
    except RuntimeError:  # the backend already runs (a notebook, a test process)
        pass


@contextlib.contextmanager
def replica_scope(devices: int | str, device: jax.Device) -> Iterator[Placement]:
    """One process drives every replica: rank 0 of N, where N is train.devices of this platform's devices."""
    available = len(jax.devices(device.platform))
    hint = (
        "start Python with XLA_FLAGS=--xla_force_host_platform_device_count=N "
        "(or jax.config.update('jax_num_cpu_devices', N) before JAX first runs)"
        if device.platform == "cpu"
        else "use at most that many"
    )
    how = f"JAX sees {available} {device.platform} device(s); {hint}"
    yield Placement(0, resolve_replicas(devices, available, how))


def replica_mesh(placement: Placement, device: jax.Device) -> Optional[Mesh]:
    """The 1-D mesh of the run's replicas; None for one replica."""
    if placement.replicas == 1:
        return None
    return Mesh(np.array(jax.devices(device.platform)[: placement.replicas]), (AXIS,))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """A copy of `tree` on every replica's device (the weights and optimizer state)."""
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_replica_axis(tree: Any, mesh: Optional[Mesh], axis: int) -> Any:
    """Each leaf's replica axis (`axis`) split over the mesh: replica r's shard on device r."""
    if mesh is None:
        return tree
    spec = PartitionSpec(*([None] * axis), AXIS)
    return jax.device_put(tree, NamedSharding(mesh, spec))
