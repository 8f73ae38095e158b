"""The gradient of one micro-batch, and of a micro-batch split over replicas as DDP computes it:
JAX's half of what torch's autograd and DistributedDataParallel do inside torchloop's train_step."""

from __future__ import annotations

from typing import Any, Callable, Optional, cast

import jax

from flaxloop.losses import LossFn
from flaxloop.state import TrainState

# (seed, forward pass, the micro-batch rows' positions) -> each parity dropout layer's mask, by path key
# (flaxloop.dropout.parity_dropout_masks with the run's layers and dtype bound). The seed is an argument of
# the step, not a constant, so runs that differ only in their seed share one compiled step.
MaskFn = Callable[..., dict[str, jax.Array]]


def micro_gradients(
    state: TrainState,
    batch_stats: Any,
    forward_pass: jax.Array,
    micro: dict[str, Any],
    scale: float,
    loss_fn: LossFn,
    masks_fn: Optional[MaskFn] = None,
    data: Optional[tuple[jax.Array, jax.Array]] = None,
) -> tuple[jax.Array, Any, Any]:
    """Loss * scale, the gradient of that times the fp16 loss scale, and the BatchNorm
    statistics after one micro-batch. The loss is computed in the weights' float dtype. Parity
    dropout masks are generated here, on the device, from the traced forward-pass count; with the
    training split on the device (`data`), the micro-batch is its rows, gathered here."""
    dropout_key = jax.random.fold_in(state.dropout_key, forward_pass)
    if "replica" in micro:  # framework-mode dropout: each replica draws its own masks
        dropout_key = jax.random.fold_in(dropout_key, micro["replica"])
    loss_scale = 1.0 if state.loss_scale is None else state.loss_scale.scale
    masks = None
    if masks_fn is not None:
        masks = masks_fn(micro["mask_seed"], forward_pass=forward_pass, rows=micro["mask_rows"])
    x, y = (micro["x"], micro["y"]) if data is None else (data[0][micro["rows"]], data[1][micro["rows"]])

    def compute_loss(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        variables = {"params": params, "batch_stats": batch_stats}
        logits, stats = state.apply_fn(variables, x, True, {"dropout": dropout_key}, masks)
        loss = loss_fn(logits.astype(jax.tree.leaves(params)[0].dtype), y) * scale
        return loss * loss_scale, (loss, stats)

    (_, (loss, new_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    return loss, grads, new_stats


def replica_gradients(
    state: TrainState,
    batch_stats: Any,
    forward_pass: jax.Array,
    micro: dict[str, Any],
    scale: float,
    loss_fn: LossFn,
    masks_fn: Optional[MaskFn] = None,
    data: Optional[tuple[jax.Array, jax.Array]] = None,
) -> tuple[jax.Array, Any, Any]:
    """micro_gradients of a micro-batch split over N replicas, as torch DDP computes it: each replica
    runs its shard (BatchNorm normalises with the shard's own statistics) with its loss weighted by
    N times its share of the global batch (so its backward, fp16 overflows included, sees what a
    DDP rank sees); the gradients are divided by N and summed (DDP's averaging all-reduce), and the
    BatchNorm running statistics are replica 0's (rank 0's buffers, broadcast after each update)."""
    if "replicas" not in micro:
        return micro_gradients(state, batch_stats, forward_pass, micro, scale, loss_fn, masks_fn, data)
    shards = micro["replicas"]
    replicas = len(shards) if isinstance(shards, tuple) else len(shards["weight"])

    def replica(shard: dict[str, Any]) -> tuple[jax.Array, Any, Any]:
        weight = scale * shard["weight"] * replicas
        return micro_gradients(state, batch_stats, forward_pass, shard, weight, loss_fn, masks_fn)

    if isinstance(shards, dict):  # equal shards, stacked on a replica axis sharded over the devices
        losses, grads, stats = jax.vmap(replica)(shards)
        grads = jax.tree.map(lambda g: (g / replicas).sum(0), grads)
        return losses.sum() / replicas, grads, jax.tree.map(lambda s: s[0], stats)
    results = [replica(shard) for shard in shards]  # uneven shards: one after another
    loss = cast(jax.Array, sum(result[0] for result in results)) / replicas  # a sum of arrays, never the 0 start
    grads = jax.tree.map(lambda *g: sum(x / replicas for x in g), *[result[1] for result in results])
    return loss, grads, results[0][2]
