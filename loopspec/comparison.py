"""Compare two run directories: `python -m loopspec.comparison RUN_A RUN_B [--rtol R] [--steps N]`.

Per-step loss, lr and grad_norm, per-epoch validation metrics, and the initial and final
weights tensor by tensor. Prints the largest relative difference of each quantity and the
first step (or epoch) over tolerance; exits 1 when the runs disagree beyond --rtol.

Relative difference of two numbers: |a - b| / max(|a|, |b|). Of two tensors:
max|a - b| / (the largest |value| either run's tensor had at init or at the end), so an
element near zero is judged against its tensor's scale. The init term matters for
parameters whose true gradient is zero, such as a bias feeding BatchNorm: weight decay
shrinks them from ~0.1 to rounding-noise size (1e-13), where only an absolute comparison
at the tensor's original scale means anything. Integer tensors (num_batches_tracked)
must match exactly.

Such a bias (a Linear or Conv bias feeding BatchNorm, and that BatchNorm's running_mean,
which carries it) is marked in the report: its true gradient is zero, so only rounding
noise moves it, and Adam-family optimizers scale that noise up to about lr * noise / eps
per step. It is the first tensor to exceed 1e-10 on long, high-learning-rate float64 runs
while losses and validation metrics still agree to 1e-12.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from loopspec.checkpoint import flat_config
from loopspec.cli import command_name
from loopspec.metrics import read_metrics
from loopspec.weights import load_weights

STEP_QUANTITIES = ("loss", "lr", "grad_norm", "momentum", "loss_scale", "skipped", "clipped")
EPOCH_QUANTITIES = ("train_loss", "val_loss", "val_acc", "val_precision", "val_recall", "val_f1")
TINY = 1e-300


def relative_difference(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|); 0 for equal values (NaNs included), inf where one side is not finite."""
    if a == b:
        return 0.0
    if isinstance(a, str) or isinstance(b, str):  # "nan"/"inf" strings from the metrics writer
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), TINY)


def tensor_relative_difference(a: np.ndarray, b: np.ndarray, *reference: np.ndarray) -> float:
    """max|a - b| over the largest magnitude of a, b and any reference tensors (the inits)."""
    if a.shape != b.shape:
        return math.inf
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(b.dtype, np.integer):
        return 0.0 if np.array_equal(a, b) else math.inf
    a, b = a.astype(np.float64), b.astype(np.float64)
    scale = max([TINY] + [float(np.abs(t).max(initial=0.0)) for t in (a, b, *reference) if t.shape == a.shape])
    return float(np.abs(a - b).max(initial=0.0) / scale)


@dataclass
class Row:
    """One compared quantity: how many values, the largest relative difference, where it first went over."""

    quantity: str
    compared: int
    max_rel: float
    first_over: Optional[int]  # step or epoch number
    unit: str  # "step", "epoch", "tensor"
    judged: bool = True
    note: str = ""

    def ok(self, rtol: float) -> bool:
        return not self.judged or self.max_rel <= rtol


@dataclass
class Report:
    """Every compared quantity of two runs; `agree` is the verdict at `rtol`, `render()` the table.
    `runs` describes each run (backend, precision, updates); `config_differences` lists the config keys
    whose values differ (runs of different configs are not expected to agree)."""

    rtol: float
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    config_differences: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        """Every row within rtol and nothing missing from either run."""
        return not self.problems and all(row.ok(self.rtol) for row in self.rows)

    def max_rel(self, quantity: str) -> float:
        """The largest relative difference of one quantity ("step loss", "final head.weight", ...)."""
        return next(row.max_rel for row in self.rows if row.quantity == quantity)

    def render(self) -> str:
        """The table parity-compare prints, ending in AGREE or DISAGREE."""
        lines = [f"{label}: {run}" for label, run in zip("AB", self.runs)]
        if self.config_differences:
            lines.append(
                f"the configs differ in {len(self.config_differences)} key(s): {'; '.join(self.config_differences)}"
                " (a difference in how a run computes, such as train.devices, may still agree)"
            )
        lines.append(f"{'quantity':<44} {'n':>6} {'max rel diff':>13}  first over rtol={self.rtol:g}")
        for row in self.rows:
            if row.unit == "tensor":
                first = "-" if row.max_rel <= self.rtol else "over"
            else:
                first = "-" if row.first_over is None else f"{row.unit} {row.first_over}"
            if not row.judged:
                first += " (not judged)"
            lines.append(
                f"{row.quantity:<44} {row.compared:>6} {row.max_rel:>13.3e}  {first}"
                + (f"  [{row.note}]" if row.note and not row.ok(self.rtol) else "")
            )
        lines += [f"problem: {problem}" for problem in self.problems]
        lines.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(lines)


BATCHNORM_FED_NOTE = "bias feeding BatchNorm: zero true gradient, moved only by rounding noise"


def feeds_batchnorm(name: str, names: set[str]) -> bool:
    """blocks.0.linear.bias / features.1.conv.bias before a BatchNorm, or that norm's running_mean."""
    block, _, leaf = name.rpartition(".")
    parent = block.rpartition(".")[0]
    if leaf == "bias" and block.endswith((".linear", ".conv")):
        return f"{parent}.norm.running_mean" in names
    return leaf == "running_mean" and bool({f"{parent}.linear.bias", f"{parent}.conv.bias"} & names)


def _series_row(
    name: str, records_a: list[dict], records_b: list[dict], key: str, index: str, rtol: float, judged: bool
) -> Optional[Row]:
    pairs = [(ra[index], ra[key], rb[key]) for ra, rb in zip(records_a, records_b) if key in ra and key in rb]
    if not pairs:
        return None
    diffs = [(number, relative_difference(a, b)) for number, a, b in pairs]
    first_over = next((number for number, d in diffs if d > rtol), None)
    return Row(name, len(diffs), max(d for _, d in diffs), first_over, index, judged)


# Keys that change what a run records, not what it computes.
NOT_COMPUTED = ("train.log_every", "train.verbose", "train.loggers", "train.checkpoint.", "data.path")


def run_facts(run: Path) -> dict[str, Any]:
    """What a run directory says about itself: backend, precision, config (empty where a file is missing)."""
    facts: dict[str, Any] = {"config": {}, "backend": "?", "precision": "?"}
    for name in ("config.json", "run.json"):
        try:
            values = json.loads((run / name).read_text())
        except (OSError, ValueError):
            continue
        if name == "config.json" and isinstance(values, dict):
            facts["config"] = values
            facts["precision"] = values.get("train", {}).get("precision", "?")
        elif isinstance(values, dict):
            facts["backend"] = values.get("backend", "?")
    return facts


def describe_run(run: Path, facts: dict[str, Any], steps: int) -> str:
    return f"{run} ({facts['backend']}, {facts['precision']}, {steps} updates)"


def differing_keys(config_a: dict[str, Any], config_b: dict[str, Any]) -> list[str]:
    """'key (a vs b)' for every config key whose values differ, apart from NOT_COMPUTED."""
    flat_a, flat_b = flat_config(config_a), flat_config(config_b)
    keys = [
        key
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key) and not key.startswith(NOT_COMPUTED)
    ]
    return [f"{key} ({flat_a.get(key)!r} vs {flat_b.get(key)!r})" for key in keys]


def compare_runs(run_a: str | Path, run_b: str | Path, rtol: float = 1e-10, steps: Optional[int] = None) -> Report:
    """Compare two runs; with `steps`, only the first N steps are judged (the rest is shown)."""
    run_a, run_b = Path(run_a), Path(run_b)
    report = Report(rtol)
    facts_a, facts_b = run_facts(run_a), run_facts(run_b)
    if facts_a["config"] and facts_b["config"]:
        report.config_differences = differing_keys(facts_a["config"], facts_b["config"])
    metrics_a, metrics_b = read_metrics(run_a / "metrics.jsonl"), read_metrics(run_b / "metrics.jsonl")
    steps_a, steps_b = metrics_a["step"], metrics_b["step"]
    report.runs = [describe_run(run_a, facts_a, len(steps_a)), describe_run(run_b, facts_b, len(steps_b))]
    if steps is not None:
        steps_a, steps_b = steps_a[:steps], steps_b[:steps]
        if min(len(steps_a), len(steps_b)) < steps:
            report.problems.append(f"--steps {steps} but the runs have {len(steps_a)} and {len(steps_b)} steps")
    elif len(steps_a) != len(steps_b):
        report.problems.append(
            f"step counts differ: {len(steps_a)} vs {len(steps_b)} "
            f"(compared the first {min(len(steps_a), len(steps_b))})"
        )
    for key in STEP_QUANTITIES:
        row = _series_row(f"step {key}", steps_a, steps_b, key, "step", rtol, judged=True)
        if row:
            report.rows.append(row)

    whole_run = steps is None
    epochs_a, epochs_b = metrics_a["epoch"], metrics_b["epoch"]
    if whole_run and len(epochs_a) != len(epochs_b):
        report.problems.append(f"epoch counts differ: {len(epochs_a)} vs {len(epochs_b)}")
    for key in EPOCH_QUANTITIES:
        row = _series_row(f"epoch {key}", epochs_a, epochs_b, key, "epoch", rtol, judged=whole_run)
        if row:
            report.rows.append(row)

    inits: tuple[dict[str, np.ndarray], ...] = ()
    for filename in ("init.safetensors", "final.safetensors"):
        if not (run_a / filename).exists() or not (run_b / filename).exists():
            report.problems.append(f"{filename} missing in {run_a if not (run_a / filename).exists() else run_b}")
            continue
        weights_a, weights_b = load_weights(run_a / filename), load_weights(run_b / filename)
        if set(weights_a) != set(weights_b):
            report.problems.append(f"{filename}: tensor names differ: {sorted(set(weights_a) ^ set(weights_b))[:4]}")
        judged = whole_run or filename == "init.safetensors"
        shared = sorted(set(weights_a) & set(weights_b))
        reshaped = [name for name in shared if weights_a[name].shape != weights_b[name].shape]
        if reshaped:
            first = reshaped[0]
            report.problems.append(
                f"{filename}: {len(reshaped)} tensor(s) differ in shape, e.g. {first} "
                f"{tuple(weights_a[first].shape)} vs {tuple(weights_b[first].shape)}: different architectures"
            )
        for name in (name for name in shared if name not in reshaped):
            reference = [init[name] for init in inits if name in init]
            diff = tensor_relative_difference(weights_a[name], weights_b[name], *reference)
            note = BATCHNORM_FED_NOTE if feeds_batchnorm(name, set(weights_a)) else ""
            report.rows.append(
                Row(f"{filename.split('.')[0]} {name}", weights_a[name].size, diff, None, "tensor", judged, note)
            )
        inits = (weights_a, weights_b)
    return report


FLOAT64_RTOL = 1e-10


Float32Judge = Callable[[Path, Path], tuple[Optional[bool], str]]  # (agree, or None: cannot judge; text)


def main(
    argv: Optional[Sequence[str]] = None, float32_judge: Optional[Float32Judge] = None, module: str = __name__
) -> int:
    """Compare two runs: exit 0 when they agree, 1 when not, 2 on bad arguments (or float32 runs the
    judge cannot judge). `float32_judge` (parity-compare's, which needs both frameworks) judges fp32
    runs by the envelope; without one they are shown at 1e-10 with a note."""
    prog = command_name("loopspec.comparison" if module == "__main__" else module, argv)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument(
        "--rtol",
        type=float,
        help=f"relative tolerance for every quantity (default: {FLOAT64_RTOL:g} for float64 runs; float32 runs are "
        "judged against this machine's one-ulp envelope instead)",
    )
    parser.add_argument("--steps", type=int, help="judge only the first N steps (float32 short-horizon checks)")
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not (Path(run) / "metrics.jsonl").is_file():
            print(f"{parser.prog}: error: {run} is not a run directory (no metrics.jsonl)", file=sys.stderr)
            return 2
    report = compare_runs(args.run_a, args.run_b, args.rtol or FLOAT64_RTOL, args.steps)
    precisions = {run_facts(Path(run))["precision"] for run in (args.run_a, args.run_b)}
    if args.rtol is not None or precisions == {"fp64"} or report.config_differences:
        print(report.render())
        return 0 if report.agree else 1
    print("\n".join(f"{label}: {run}" for label, run in zip("AB", report.runs)))
    print(
        f"{' and '.join(sorted(precisions))} runs: {FLOAT64_RTOL:g} is the float64 tolerance, and float32 rounding "
        "differs between XLA and ATen from the first operation (README, 'What parity means'); pass --rtol to "
        "compare at a tolerance of your own"
    )
    if precisions != {"fp32"} or float32_judge is None:
        why = (
            "mixed-precision runs are judged by accuracy over seeds (parity_tests/test_precision.py), not step by step"
            if precisions != {"fp32"}
            else "the float32 verdict is parity-compare's (python -m paritykit.compare; it needs both frameworks)"
        )
        print(f"{why}; the table at rtol {FLOAT64_RTOL:g} follows for reference")
        print(report.render())
        return 0 if report.agree else 1
    print(
        "the float32 verdict: the first 30 updates against the envelope measured now on this machine (each "
        "backend rerun from weights and inputs moved by one ulp), lr and momentum at 0.5 ulp over the run"
    )
    agree, text = float32_judge(Path(args.run_a), Path(args.run_b))
    print(text)
    return 2 if agree is None else 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
