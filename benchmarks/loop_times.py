"""Step times of the whole training loop (batches, dropout masks, dispatch, read-back), both backends.

    python -m benchmarks.loop_times [--config intrusion_mlp_focal] [--epochs 3] [--repeats 3] [--precision fp32]

Trains the recipe through each backend's `fit` with parity dropout, framework dropout and no dropout
(model.dropout 0), and times the interval between consecutive read-backs of updates (the loop's
steady state: what an update costs the run, host work included), skipping the first epoch (compilation,
warm-up). Each repeat runs every backend and mode once, in turn, so a slow spell of a shared machine
lands on all of them alike. Prints the median microseconds per update and each mode's ratio to the
same backend's run without dropout; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any, Callable

from loopspec.config import as_config
from loopspec.loop import backend_fit

MODES: dict[str, list[str]] = {
    "parity": ["model.dropout_mode=parity"],
    "framework": ["model.dropout_mode=framework"],
    "none": ["model.dropout=0.0"],
}


def timing_fit(backend_class: Any, stamps: list[tuple[int, float, float]]) -> Callable[..., Any]:
    """The backend's fit, with a stamp (epoch, wall seconds, process CPU seconds) at every read-back."""

    class Timed(backend_class):  # type: ignore[misc, valid-type]  (a backend class chosen at run time)
        def read(self, handle: Any) -> Any:
            result = super().read(handle)
            stamps.append((self.epochs_done, time.perf_counter(), time.process_time()))
            return result

    Timed.name, Timed.scope = backend_class.name, backend_class.scope
    return backend_fit(Timed)


def epochs_done_tracking(backend_class: Any) -> Any:
    """The torch backend keeps no epoch count; count end_epoch calls for it."""
    if hasattr(backend_class, "epochs_done"):
        return backend_class

    class Counting(backend_class):  # type: ignore[misc, valid-type]
        epochs_done = 0

        def end_epoch(self, epochs_done: int, monitored: float) -> None:
            self.epochs_done = epochs_done
            super().end_epoch(epochs_done, monitored)

    Counting.name, Counting.scope = backend_class.name, backend_class.scope
    return Counting


def backend_class(name: str) -> Any:
    if name == "torch":
        from torchloop.train import TorchBackend

        return TorchBackend
    from flaxloop.train import JaxBackend

    return JaxBackend


def update_microseconds(config: Any, backend: str, mode: str, out: str) -> tuple[float, float]:
    """Median wall microseconds between consecutive read-backs after the first epoch, and the process's
    mean CPU microseconds per update over the same span (all threads: host and XLA:CPU or torch work)."""
    stamps: list[tuple[int, float, float]] = []
    fit = timing_fit(epochs_done_tracking(backend_class(backend)), stamps)
    fit(config, out, [*MODES[mode], "train.verbose=0"], overwrite=True)
    later = [(wall, cpu) for epoch, wall, cpu in stamps if epoch >= 1]
    gaps = [b[0] - a[0] for a, b in zip(later, later[1:])]
    cpu = (later[-1][1] - later[0][1]) / (len(later) - 1)
    return statistics.median(gaps) * 1e6, cpu * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_times", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="intrusion_mlp_focal")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp64"))
    parser.add_argument("--backends", default="torch,jax")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    overrides = [
        f"train.epochs={args.epochs}",
        f"train.precision={args.precision}",
        "train.early_stopping.enabled=false",
    ]
    config = as_config(args.config, overrides)
    backends, modes = args.backends.split(","), args.modes.split(",")
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {(b, m): [] for b in backends for m in modes}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for backend in backends:
                for mode in modes:
                    samples[backend, mode].append(update_microseconds(config, backend, mode, f"{out}/{backend}"))
    print(
        f"{args.config}, {args.precision}, {args.epochs} epochs, {args.repeats} repeats: wall = median us between "
        "read-backs (best and median repeat), cpu = process CPU us per update (median repeat)"
    )
    print(f"{'backend':8} {'mode':10} {'wall best':>10} {'wall med':>9} {'cpu':>8} {'cpu/none':>8}  wall samples")
    for (backend, mode), values in samples.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        none = samples.get((backend, "none"))
        ratio = f"{statistics.median(cpus) / statistics.median([c for _, c in none]):8.2f}" if none else " " * 8
        print(
            f"{backend:8} {mode:10} {min(walls):10.0f} {statistics.median(walls):9.0f} {statistics.median(cpus):8.0f} "
            f"{ratio}  {' '.join(f'{w:.0f}' for w in walls)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
