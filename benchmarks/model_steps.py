"""The JAX model alone: the library's Flax model of a peers workload against the plain Flax loop's, in one process.

    python -m benchmarks.model_steps [--workloads digits_cnn] [--rounds 30] [--smoke]

Both models get the same textbook jitted step (`value_and_grad`, the plain loop's optax transformation,
`apply_updates`; framework dropout), the same loss and the same batches, so what differs is only the
models' arithmetic: the library's holds torch's (NCHW in, torch's BatchNorm, torch's layer layouts), the
peer's the Flax examples'. Where `benchmarks.peers` finds flaxloop slower than the plain Flax loop, this
says whether the model is why. Prints XLA's cost analysis of each compiled step (MFLOP, MB accessed) and
the median milliseconds an update over rounds that alternate the two (benchmarks.timing's interleaved
repeats, so a slow spell of a shared machine lands on both); asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.peer_programs import flax_plain
from benchmarks.peer_programs.common import Workload, load_workload
from benchmarks.peers import WORKLOADS
from benchmarks.timing import Timed, interleaved_repeats
from flaxloop.models import build_model


def library_apply(w: Workload, sample: np.ndarray) -> tuple[Any, Callable[..., Any]]:
    """The library's model (as flaxloop builds it for the recipe): its variables, and a forward pass
    returning (logits, batch statistics)."""
    model = build_model(w.config.model, w.data.input_shape, w.out_dim, jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(sample))
    return variables, lambda v, x, key: model.apply(v, x, True, {"dropout": key})


def peer_apply(w: Workload, sample: np.ndarray) -> tuple[Any, Callable[..., Any]]:
    model = flax_plain.build_model(w)
    variables = model.init(jax.random.PRNGKey(0), sample, train=False)

    def forward(v: Any, x: jax.Array, key: jax.Array) -> tuple[jax.Array, Any]:
        logits, updates = model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
        return logits, updates.get("batch_stats", {})

    return variables, forward


def compiled_step(w: Workload, variables: Any, forward: Callable[..., Any], batch: tuple[Any, Any]) -> tuple[Any, Any]:
    """The textbook step over (params, batch_stats, opt_state, step), compiled for the batch's shapes."""
    tx, loss_fn = flax_plain.make_tx(w), flax_plain.loss_of(w)
    params, stats = variables["params"], variables.get("batch_stats", {})

    def step(params: Any, stats: Any, opt_state: Any, count: jax.Array, x: jax.Array, y: jax.Array) -> Any:
        key = jax.random.fold_in(jax.random.PRNGKey(1), count)

        def loss_of(p: Any) -> tuple[jax.Array, Any]:
            logits, new_stats = forward({"params": p, "batch_stats": stats}, x, key)
            return loss_fn(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, count + 1, loss

    state = (params, stats, tx.init(params), jnp.zeros([], jnp.int32))
    return jax.jit(step).lower(*state, *batch).compile(), state


def batches(w: Workload, x: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    size, rows = w.config.data.batch_size, np.random.default_rng(0).permutation(len(x))
    return [(x[rows[i * size : (i + 1) * size]], w.data.y_train[rows[i * size : (i + 1) * size]]) for i in range(count)]


def timed_updates(step: Any, state: tuple[Any, ...], data: list[tuple[np.ndarray, np.ndarray]]) -> Timed:
    """Each call one update on the next batch, from the state the last call left."""
    box: dict[str, Any] = {"state": state}

    def update(i: int) -> None:
        *box["state"], _ = step(*box["state"], *data[i % len(data)])

    return Timed(update, lambda: jax.block_until_ready(box["state"]), len(data), 1, 0.0)


def measure(name: str, rounds: int, count: int, smoke: bool) -> list[str]:
    sets = ["train.device=cpu", *(WORKLOADS[name].smoke if smoke else ())]
    w = load_workload(argparse.Namespace(config=WORKLOADS[name].recipe, set=sets))
    library_x, peer_x = w.data.x_train.astype(np.int32 if w.tokens else np.float32), flax_plain.arrays(w)[0]
    count = min(count, len(library_x) // w.config.data.batch_size)
    programs = {}
    for label, apply, x in (
        ("library model", library_apply, library_x),
        ("plain Flax loop's model", peer_apply, peer_x),
    ):
        variables, forward = apply(w, x[:2])
        data = batches(w, x, count)
        step, state = compiled_step(w, variables, forward, data[0])
        programs[label] = (step, timed_updates(step, state, data))
    modes = {label: timed for label, (_, timed) in programs.items()}
    interleaved_repeats(modes, 1)  # a warm-up round, untimed
    samples = interleaved_repeats(modes, rounds)
    times = {label: [us / 1e3 for us in values] for label, values in samples.items()}
    lines = [f"## {name} (recipe {WORKLOADS[name].recipe}, {count} updates a round, {rounds} rounds)", ""]
    lines += ["| model | MFLOP | MB accessed | median ms/update | spread |", "|---|---|---|---|---|"]
    for label, (step, _) in programs.items():
        cost = step.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        median = statistics.median(times[label])
        spread = (max(times[label]) - min(times[label])) / median
        mflop, megabytes = cost["flops"] / 1e6, cost["bytes accessed"] / 1e6
        lines.append(f"| {label} | {mflop:.2f} | {megabytes:.2f} | {median:.3f} | {spread:.0%} |")
    ratio = statistics.median(times["library model"]) / statistics.median(times["plain Flax loop's model"])
    return lines + ["", f"library model / plain Flax loop's model: {ratio:.3f} (median ms/update)", ""]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="digits_cnn", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds of each model (default 30)")
    parser.add_argument("--updates", type=int, default=40, help="updates a round (default 40)")
    parser.add_argument("--smoke", action="store_true", help="a dry run: 2 rounds of 2 updates on small subsets")
    args = parser.parse_args(argv)
    names = [name for name in args.workloads.split(",") if name]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]}; choose from {', '.join(WORKLOADS)}")
    rounds, count = (2, 2) if args.smoke else (args.rounds, args.updates)
    for name in names:
        print("\n".join(measure(name, rounds, count, args.smoke)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
