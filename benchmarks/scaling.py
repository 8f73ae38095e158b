"""Cost as the work grows: time per step against batch size and against width, both backends and their bare loops.

    python -m benchmarks.scaling [--batch-sizes 32,64,...,4096] [--widths 64,...,2048] [--width-batch 256]
        [--modes bare_eager,eager,bare_jit,jit] [--precision fp32] [--device cpu|cuda]
        [--steps 10] [--warmup 3] [--repeats 3] [--out benchmarks/results; --smoke: runs/benchmarks] [--smoke]

The MLP workload of benchmarks.throughput, swept two ways: batch size at its own width (hidden
[256, 128]), and width (hidden [w, w // 2]) at one batch size. Each backend runs every point in
its own process with benchmarks.torch_bench / benchmarks.jax_bench, so the timing is theirs:
data on the device, the device synchronised, every mode and its bare twin interleaved per repeat.
Writes JSON, Markdown and a PNG under --out, named with the device and date, and prints, per
curve, where it becomes compute-bound (COMPUTE_BOUND states the criterion): measured, nothing
asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.throughput import backend_module, run_workers, summarize
from benchmarks.timing import interleaved_repeats, timed_rows
from loopspec.cli import OneLineParser

DEFAULT_WIDTH = 256  # the mlp workload's own hidden [256, 128]
SHARE = 0.8
COMPUTE_BOUND = (
    f"a curve is compute-bound from the smallest point whose achieved FLOP/s is at least {SHARE:.0%} of the best "
    "it reaches there or at any larger point of the sweep: from there on, no larger batch (or width) does a FLOP "
    f"more than {1 - SHARE:.0%} cheaper, so the step time grows about in proportion to the work (for a step of fixed "
    f"overhead plus batch-proportional work, the point where that work is about {SHARE:.0%} of the step). The "
    "largest point alone proves nothing: a curve that meets the test only there is not compute-bound within the sweep"
)
SMOKE = {"batch_sizes": [32, 64], "widths": [64, 128], "steps": 2, "warmup": 1, "repeats": 1}
BACKEND_NAMES = {"torch": "torch", "jax": "JAX"}
# set for a run, they change what a shared CPU measures (OMP_WAIT_POLICY=PASSIVE stops torch's threads spinning)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")
# torch_bench.MODES and jax_bench.MODES restated: a bad --modes fails before torch or jax load (a test keeps them equal)
MODES = {
    "torch": ("bare_eager", "eager", "bare_compile", "compile", "bare_cuda_graph", "cuda_graph"),
    "jax": ("bare_jit", "jit", "bare_fused", "fused"),
}


def compute_bound_from(rates: Sequence[float], share: float = SHARE) -> Optional[int]:
    """Index of the first point from which the curve is compute-bound (the criterion above), or
    None when no point but the last meets it. `rates`: achieved FLOP/s, in increasing size order."""
    for i in range(len(rates) - 1):
        if rates[i] >= share * max(rates[i:]):
            return i
    return None


def sweep_points(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(sweep, batch size, width) of every point measured."""
    return [("batch", b, args.width) for b in args.batch_sizes] + [("width", args.width_batch, w) for w in args.widths]


def worker(args: argparse.Namespace) -> int:
    """One backend, every point: write its rows to args.worker_json. Every point is prepared (built,
    compiled, warmed up) first; then each repeat times every point and mode once, in turn, so a slow
    spell of a shared machine lands on the whole curve alike rather than bending it where it fell."""
    module = backend_module(args.worker)
    modes = [m for m in args.modes if m in module.MODES]
    timed = {}
    with module.scope(args.precision, args.device):
        for point in sweep_points(args):
            sweep, batch, width = point
            prepared = module.prepare(
                "mlp", batch, args.precision, args.device, modes, args.steps, args.warmup, width=width
            )
            timed.update({(point, mode): t for mode, t in prepared.items()})
            print(f"  {args.worker} {sweep} b{batch} w{width}: prepared", flush=True)
        per_step = interleaved_repeats(timed, args.repeats)
    rows = []
    for (point, mode), t in timed.items():
        sweep, batch, width = point
        (row,) = timed_rows(args.worker, {mode: t}, {mode: per_step[point, mode]})
        rows.append({"sweep": sweep, "model": "mlp", "batch_size": batch, "width": width, **row})
        print(f"  {args.worker} {sweep} b{batch} w{width} {mode}: {statistics.median(row['us_per_step']):.0f} us/step")
    result = {
        "version": module.version(),
        "device": module.device_label(args.device),
        "peak_flops": module.peak_flops(args.precision, args.device),
        "rows": rows,
    }
    Path(args.worker_json).write_text(json.dumps(result))
    return 0


def worker_command(args: argparse.Namespace, backend: str, target: Path) -> list[str]:
    joined = {"--batch-sizes": args.batch_sizes, "--widths": args.widths, "--modes": args.modes}
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", backend, "--worker-json", str(target)]
    command += [item for flag, values in joined.items() for item in (flag, ",".join(map(str, values)))]
    for flag in ("width", "width_batch", "precision", "device", "steps", "warmup", "repeats"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return command


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both backend processes; rows with rates, and the compute-bound point of every curve."""
    from benchmarks.workloads import step_flops, workload_batches, workload_config

    results = run_workers(lambda backend, target: worker_command(args, backend, target))
    rows = []
    for result in results.values():
        for row in result["rows"]:
            config = workload_config("mlp", row["batch_size"], args.precision, args.device, row["width"])
            _, _, out_dim, shape = workload_batches(config, 1)
            rows.append(summarize(row, step_flops(config, shape, out_dim), result["peak_flops"]))
    return {
        "device": results["torch"]["device"],
        "date": datetime.date.today().isoformat(),
        "versions": ", ".join(r["version"] for r in results.values()),
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "width": args.width,
        "width_batch": args.width_batch,
        "criterion": COMPUTE_BOUND,
        "environment": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
        "peak_flops": {b: r["peak_flops"] for b, r in results.items()},
        "rows": rows,
        "curves": curves(rows),
    }


def size_of(row: dict[str, Any]) -> int:
    return row["batch_size"] if row["sweep"] == "batch" else row["width"]


def curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (sweep, backend, mode): its sizes, and where it becomes compute-bound."""
    out = []
    for key in dict.fromkeys((r["sweep"], r["backend"], r["mode"]) for r in rows):
        points = sorted((r for r in rows if (r["sweep"], r["backend"], r["mode"]) == key), key=size_of)
        rates = [r["achieved_flops"] for r in points]
        onset = compute_bound_from(rates)
        out.append(
            {
                "sweep": key[0],
                "backend": key[1],
                "mode": key[2],
                "sizes": [size_of(r) for r in points],
                "us_per_step": [r["us_median"] for r in points],
                "achieved_flops": rates,
                "compute_bound_from": None if onset is None else size_of(points[onset]),
                "last_gain": rates[-1] / rates[-2] if len(rates) > 1 else None,
            }
        )
    return out


def curve_phrase(curve: dict[str, Any]) -> str:
    name = f"{BACKEND_NAMES[curve['backend']]} {curve['mode']}"
    unit = "batch" if curve["sweep"] == "batch" else "width"
    if curve["compute_bound_from"] is None:
        gain = curve["last_gain"]
        still = f", FLOP/s still x{gain:.2f} over its last step" if gain else ""
        return f"{name} is not compute-bound up to {unit} {curve['sizes'][-1]}{still}"
    if curve["compute_bound_from"] == curve["sizes"][0]:
        return f"{name} is compute-bound already at {unit} {curve['sizes'][0]}, the smallest measured"
    return f"{name} becomes compute-bound at {unit} {curve['compute_bound_from']}"


def sentences(report: dict[str, Any]) -> str:
    """Where each curve becomes compute-bound, as measured: one sentence per sweep."""
    where = {
        "batch": f"Batch sweep (MLP, width {report['width']})",
        "width": f"Width sweep (MLP, batch {report['width_batch']})",
    }
    out = []
    for sweep, lead in where.items():
        phrases = [curve_phrase(c) for c in report["curves"] if c["sweep"] == sweep]
        if phrases:
            out.append(f"{lead}, {report['device']}, {report['precision']}: " + "; ".join(phrases) + ".")
    return " ".join(out)


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Scaling: {report['device']}, {report['date']}",
        "",
        f"{report['versions']}; precision {report['precision']}; median of {report['repeats']} repeats of "
        f"{report['steps']} steps after {report['warmup']} warm-up steps. Width w means MLP hidden [w, w // 2]."
        + "".join(f" {name}={value}." for name, value in report.get("environment", {}).items()),
        "",
        sentences(report),
        *(
            ["", "A smoke run checks the machinery; its few points are too few to say where a curve turns."]
            if report.get("smoke")
            else []
        ),
        "",
        f"Criterion: {report['criterion']}.",
        "",
        "Measured matmul peak (2048^3): "
        + ", ".join(f"{b} {p / 1e9:.0f} GFLOP/s" for b, p in report["peak_flops"].items()),
    ]
    for sweep, label in (("batch", "batch"), ("width", "width")):
        curves = [c for c in report["curves"] if c["sweep"] == sweep]
        if not curves:
            continue
        names = [f"{c['backend']} {c['mode']}" for c in curves]
        lines += [
            "",
            f"## {label.capitalize()} sweep: us per step (GFLOP/s)",
            "",
            f"| {label} | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for i, size in enumerate(curves[0]["sizes"]):
            cells = [f"{c['us_per_step'][i]:.0f} ({c['achieved_flops'][i] / 1e9:.1f})" for c in curves]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        onsets = ["-" if c["compute_bound_from"] is None else str(c["compute_bound_from"]) for c in curves]
        lines.append("| compute-bound from | " + " | ".join(onsets) + " |")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in ("batch", "width") if any(c["sweep"] == s for c in report["curves"])]
    figure, axes = plt.subplots(2, len(sweeps), figsize=(6 * len(sweeps), 8), squeeze=False)
    for column, sweep in enumerate(sweeps):
        time_axis, rate_axis = axes[0][column], axes[1][column]
        for c in (c for c in report["curves"] if c["sweep"] == sweep):
            style = {
                "color": "tab:blue" if c["backend"] == "torch" else "tab:orange",
                "linestyle": "--" if c["mode"].startswith("bare") else "-",
                "marker": "o" if "eager" in c["mode"] or "jit" in c["mode"] else "s",
                "markersize": 3,
                "label": f"{c['backend']} {c['mode']}",
            }
            time_axis.plot(c["sizes"], c["us_per_step"], **style)
            rate_axis.plot(c["sizes"], [f / 1e9 for f in c["achieved_flops"]], **style)
            if c["compute_bound_from"] is not None:  # the onset, ringed on both panels
                i = c["sizes"].index(c["compute_bound_from"])
                for axis, y in ((time_axis, c["us_per_step"][i]), (rate_axis, c["achieved_flops"][i] / 1e9)):
                    axis.plot([c["sizes"][i]], [y], "o", markersize=10, fillstyle="none", color=style["color"])
        for backend, peak in report["peak_flops"].items():
            color = "tab:blue" if backend == "torch" else "tab:orange"
            rate_axis.axhline(peak / 1e9, color=color, linewidth=0.8, linestyle=":", label=f"{backend} matmul peak")
        fixed = f"width {report['width']}" if sweep == "batch" else f"batch {report['width_batch']}"
        xlabel = "batch size" if sweep == "batch" else "width w (hidden [w, w // 2])"
        for axis, ylabel in ((time_axis, "us per step"), (rate_axis, "achieved GFLOP/s (matmuls)")):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            axis.grid(True, which="both", linewidth=0.3)
            axis.set_title(f"MLP, {fixed}, {report['precision']}", fontsize=9)
        rate_axis.legend(fontsize=7)
    figure.suptitle(
        f"{report['device']}, {report['date']}: library (solid) and bare (dashed); ringed: compute-bound from there",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sizes(text: str) -> list[int]:
    """A comma-separated list of positive integers, sorted."""
    try:
        values = sorted({int(item) for item in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers, e.g. 32,64,128") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive integers, e.g. 32,64,128")
    return values


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=sizes, default=[2**k for k in range(5, 13)], help="32,64,...,4096")
    parser.add_argument("--widths", type=sizes, default=[2**k for k in range(6, 12)], help="64,128,...,2048")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="the width of the batch sweep")
    parser.add_argument("--width-batch", type=int, default=256, help="the batch size of the width sweep")
    parser.add_argument("--modes", default="bare_eager,eager,bare_jit,jit", help="torch and jax modes")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="default benchmarks/results (what is committed); with --smoke runs/benchmarks")
    parser.add_argument("--smoke", action="store_true", help="a tiny sweep that checks the machinery, not the speed")
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.out = args.out or ("runs/benchmarks" if args.smoke else "benchmarks/results")  # a dry run is not a result
    args.modes = args.modes.split(",") if isinstance(args.modes, str) else args.modes
    known = {m for modes in MODES.values() for m in modes}
    unknown = [m for m in args.modes if m not in known]
    if unknown:
        parser.error(f"unknown mode {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    for flag in ("width", "width_batch", "steps", "warmup", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, not {getattr(args, flag)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args)
    report = {**measure(args), "smoke": args.smoke}
    stem = f"scaling_{args.device}_{args.precision}{'_smoke' if args.smoke else ''}_{report['date']}"
    write(report, Path(args.out) / stem)
    print(render(report))
    print(f"wrote {Path(args.out) / stem}.json, .md, .png")
    return 0


def write(report: dict[str, Any], stem: Path) -> None:
    """stem.json, stem.md and stem.png."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{stem}.md").write_text(render(report))
    chart(report, Path(f"{stem}.png"))


if __name__ == "__main__":
    raise SystemExit(main())
