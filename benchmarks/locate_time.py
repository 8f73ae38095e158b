"""How long the locator takes on a divergence at update 1,000 of the default recipe, against one
uninterrupted run of it.

    python -m benchmarks.locate_time [--update 1000]

Both backends train the default recipe (intrusion_mlp_focal) as shipped (30 epochs, 2,250 updates)
in float64 with early stopping off, so that the run reaches the update; the JAX side carries a
planted bug that starts at that update (Adam's eps inside the square root, switched on by the bias
correction of that update count). Then
`paritykit.locate` runs on the two directories. Prints the wall times and the ratio of the
locator's to each run's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp

import flaxloop.optim
from loopspec import fit
from paritykit.locate import locate

RECIPE = "intrusion_mlp_focal"


def eps_inside_from(update: int, b2: float = 0.999) -> object:
    """adam_denominator with eps inside the root from `update` on (bias2_sqrt grows with the count)."""
    start = math.sqrt(1 - b2**update)
    before = math.sqrt(1 - b2 ** (update - 1))
    threshold = (start + before) / 2
    original = flaxloop.optim.adam_denominator

    def planted(nu, bias2_sqrt, eps):  # noqa: ANN001, ANN202
        return jnp.where(bias2_sqrt > threshold, jnp.sqrt(nu / bias2_sqrt**2 + eps), original(nu, bias2_sqrt, eps))

    return planted


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.locate_time", description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=int, default=1000)
    args = parser.parse_args()
    overrides = [
        "train.precision=fp64",
        "train.early_stopping.enabled=false",
        "train.verbose=0",
        "train.log_every=0",
    ]
    with tempfile.TemporaryDirectory(prefix="locate-time-") as scratch:
        root = Path(scratch)
        times = {}
        start = time.perf_counter()
        fit(RECIPE, root / "torch", backend="torch", overrides=overrides)
        times["torch run"] = time.perf_counter() - start
        original = flaxloop.optim.adam_denominator
        flaxloop.optim.adam_denominator = eps_inside_from(args.update)
        try:
            start = time.perf_counter()
            fit(RECIPE, root / "jax", backend="jax", overrides=overrides)
            times["jax run"] = time.perf_counter() - start
            start = time.perf_counter()
            location = locate(root / "torch", root / "jax", work_dir=root / "replays")
            times["locate"] = time.perf_counter() - start
        finally:
            flaxloop.optim.adam_denominator = original
    print(location.render())
    print()
    for name, seconds in times.items():
        print(f"{name:<10} {seconds:7.1f} s")
    for run in ("torch run", "jax run"):
        print(f"locate / {run}: {times['locate'] / times[run]:.2f} (target: below 1)")
    print(f"located at update {location.update} (planted at {args.update}); diagnosed: {bool(location.diagnoses)}")


if __name__ == "__main__":
    main()
