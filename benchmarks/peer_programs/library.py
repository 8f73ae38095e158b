"""The library as its users run it: `python -m torchloop.train` / `python -m flaxloop.train` with the
workload's recipe and overrides (quiet, into a scratch run directory), timed by one extra record sink.

The sink is the library's own epoch callback: the loop hands it every record as it goes, so the last
step record of an epoch marks the end of its training phase (read back, so the device is done) and
the epoch record the end of its validation. Nothing else in the library's code path changes.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Optional, Sequence

from benchmarks.peer_programs.common import EpochClock, parse_args


class ClockSink:
    """A loopspec.sinks.Sink that stamps records instead of writing them."""

    def __init__(self, clock: EpochClock):
        self.clock, self.last_step, self.steps = clock, 0.0, 0

    def write(self, record: dict[str, Any]) -> None:
        if record["kind"] == "step":
            self.last_step, self.steps = time.perf_counter(), self.steps + 1
        elif record["kind"] == "epoch":
            self.clock.train_done(self.steps, at=self.last_step)
            self.clock.epoch_done(record["val_loss"])
            self.steps = 0

    def close(self) -> None:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv, backend=True)
    import loopspec.loop
    from loopspec.backends import backend_module
    from loopspec.cli import run_cli

    clock = EpochClock()
    made = loopspec.loop.run_sinks
    loopspec.loop.run_sinks = lambda *a, **k: [*made(*a, **k), ClockSink(clock)]  # the run's sinks, plus the clock
    package = "torchloop" if args.backend == "torch" else "flaxloop"
    train = backend_module(args.backend, "train")
    with tempfile.TemporaryDirectory() as out:
        sets = [item for override in args.set for item in ("--set", override)]
        code = run_cli(
            f"python -m {package}.train",
            args.backend,
            train.fit,
            ["--config", args.config, "--out", out, *sets, "--quiet", "--overwrite"],
        )
    if code == 0:
        clock.write(args.result, version(args.backend), device(args.backend, args.set))
    return code


def version(backend: str) -> str:
    if backend == "torch":
        import torch

        return f"torch {torch.__version__}"
    import flax
    import jax

    return f"jax {jax.__version__}, flax {flax.__version__}"


def device(backend: str, overrides: Sequence[str]) -> str:
    cuda = "train.device=cuda" in overrides
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    import jax

    return str(jax.devices()[0].device_kind)


if __name__ == "__main__":
    raise SystemExit(main())
