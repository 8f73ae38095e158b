"""Throughput of both backends at their fastest, side by side, with the library's overhead.

    python -m benchmarks.throughput [--models mlp,fashion_mlp,cnn,gpt] [--precision fp32|bf16|fp16]
        [--device cpu|cuda] [--modes ...] [--batch-size N] [--steps 20] [--warmup 5] [--repeats 5]
        [--fused-unroll K] [--out benchmarks/results]

Each backend runs in its own process (benchmarks/torch_bench.py, benchmarks/jax_bench.py);
this one merges them into one report: a table on stdout, JSON, Markdown and a PNG bar chart
under --out, named with the device and date. Every mode has a bare twin (the same math as a
hand-written loop), so the library's own overhead is measured in the same run. Data lives on
the device; timings synchronise the device. Each repeat times every mode once, in turn, so a
slow spell of a shared machine lands on all modes of a backend alike. The targets are
printed as measured ratios: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

DEFAULT_BATCH = {"mlp": 256, "fashion_mlp": 256, "cnn": 128, "gpt": 16}
PAIRS = {
    "torch": [("eager", "bare_eager"), ("compile", "bare_compile"), ("cuda_graph", "bare_cuda_graph")],
    "jax": [("jit", "bare_jit"), ("fused", "bare_fused")],
}


def backend_module(backend: str) -> Any:
    if backend == "torch":
        from benchmarks import torch_bench as module
    else:
        from benchmarks import jax_bench as module
    return module


def worker(args: argparse.Namespace) -> int:
    """One backend, all models: write its rows to args.worker_json."""
    module = backend_module(args.worker)
    modes = [m for m in (args.modes.split(",") if args.modes else module.MODES) if m in module.MODES]
    result: dict[str, Any] = {
        "version": module.version(),
        "device": module.device_label(args.device),
        "peak_flops": module.peak_flops(args.precision, args.device),
        "rows": [],
    }
    for model in args.models.split(","):
        batch = args.batch_size or DEFAULT_BATCH[model]
        options = {"fused_unroll": args.fused_unroll} if args.worker == "jax" else {}
        for row in module.run(
            model, batch, args.precision, args.device, modes, args.steps, args.warmup, args.repeats, **options
        ):
            result["rows"].append({"model": model, "batch_size": batch, **row})
            print(
                f"  {args.worker} {model} {row['mode']}: {statistics.median(row['us_per_step']):.0f} us/step",
                flush=True,
            )
    Path(args.worker_json).write_text(json.dumps(result))
    return 0


def summarize(row: dict[str, Any], flops: float, peak: float, tokens: int = 1) -> dict[str, Any]:
    """Rates from the median step; `tokens` per sample (a token model's block) gives tokens/s, and
    the share of the measured matmul peak is then nanoGPT's MFU."""
    samples = row["us_per_step"]
    median = statistics.median(samples)
    achieved = flops / (median * 1e-6)
    return {
        **row,
        "us_median": median,
        "spread": (max(samples) - min(samples)) / median,
        "samples_per_s": row["batch_size"] / (median * 1e-6),
        "tokens_per_s": row["batch_size"] * tokens / (median * 1e-6) if tokens > 1 else None,
        "flops_per_step": flops,
        "achieved_flops": achieved,
        "share_of_peak": achieved / peak,
    }


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets, as measured ratios."""
    by = {(r["backend"], r["model"], r["mode"]): r for r in rows}
    out = []
    for (backend, model, mode), row in by.items():
        for library, bare in PAIRS[backend]:
            if mode == library and (backend, model, bare) in by:
                ratio = row["us_median"] / by[backend, model, bare]["us_median"]
                out.append(
                    {
                        "what": f"{backend} {model}: library {library} / bare {bare}",
                        "ratio": ratio,
                        "target": "<= 1.05",
                        "met": ratio <= 1.05,
                        "key": f"overhead/{backend}/{model}/{library}",
                    }
                )
    for model in dict.fromkeys(r["model"] for r in rows):
        if ("jax", model, "jit") in by and ("jax", model, "fused") in by:
            speedup = by["jax", model, "jit"]["us_median"] / by["jax", model, "fused"]["us_median"]
            out.append(
                {
                    "what": f"jax {model}: fused speedup over per-step jit",
                    "ratio": speedup,
                    "target": ">= 2 (mlp, CPU)" if model == "mlp" else "larger than 1",
                    "met": speedup >= (2 if model == "mlp" else 1),
                    "key": f"fused/{model}",
                }
            )
        if ("torch", model, "cuda_graph") in by:
            speedup = by["torch", model, "eager"]["us_median"] / by["torch", model, "cuda_graph"]["us_median"]
            out.append(
                {
                    "what": f"torch {model}: CUDA-graph speedup over eager",
                    "ratio": speedup,
                    "target": "> 1",
                    "met": speedup > 1,
                    "key": f"cuda_graph/{model}",
                }
            )
        best = {
            b: min(
                (r for r in rows if r["backend"] == b and r["model"] == model and not r["mode"].startswith("bare")),
                key=lambda r: r["us_median"],
                default=None,
            )
            for b in ("torch", "jax")
        }
        if all(best.values()):
            slow, fast = sorted(best.values(), key=lambda r: r["us_median"], reverse=True)
            ratio = slow["us_median"] / fast["us_median"]
            out.append(
                {
                    "what": f"{model}: slower best ({slow['backend']} {slow['mode']}) / "
                    f"faster best ({fast['backend']} {fast['mode']})",
                    "ratio": ratio,
                    "target": "<= 1.15 (GPU)",
                    "met": ratio <= 1.15,
                    "key": f"backends/{model}",
                }
            )
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Throughput: {report['device']}, {report['date']}",
        "",
        f"{report['versions']}; precision {report['precision']}; median of {report['repeats']} repeats of "
        f"{report['steps']} steps after {report['warmup']} warm-up steps; spread = (max - min) / median.",
        "",
        "| model | backend | mode | batch | samples/s | tokens/s | us/step | spread | warm-up s | peak MiB | GFLOP/s "
        "| share of matmul peak (MFU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        peak = "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}"
        tokens = "-" if r.get("tokens_per_s") is None else f"{r['tokens_per_s']:.0f}"
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['mode']} | {r['batch_size']} | {r['samples_per_s']:.0f} | "
            f"{tokens} | "
            f"{r['us_median']:.0f} | {r['spread']:.0%} | {r['warmup_seconds']:.1f} | {peak} | "
            f"{r['achieved_flops'] / 1e9:.1f} | {r['share_of_peak']:.1%} |"
        )
    lines += [
        "",
        f"Measured matmul peak ({report['precision']}, 2048^3): "
        + ", ".join(f"{b} {p / 1e9:.0f} GFLOP/s" for b, p in report["peak_flops"].items()),
        "",
        "| target | measured ratio | target value | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['what']} | {r['ratio']:.3f} | {r['target']} | {'yes' if r['met'] else 'no'} |" for r in report["ratios"]
    ]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in report["rows"]))
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models):
        rows = [r for r in report["rows"] if r["model"] == model]
        labels = [f"{r['backend']}\n{r['mode']}" for r in rows]
        colors = ["tab:blue" if r["backend"] == "torch" else "tab:orange" for r in rows]
        axis.bar(
            range(len(rows)), [r["samples_per_s"] for r in rows], color=colors, alpha=0.9, hatch=None, edgecolor="black"
        )
        for i, r in enumerate(rows):
            if r["mode"].startswith("bare"):
                axis.patches[i].set_alpha(0.45)
        axis.set_xticks(range(len(rows)), labels, fontsize=7)
        axis.set_ylabel("samples / s")
        axis.set_title(f"{model} (batch {rows[0]['batch_size']}, {report['precision']})", fontsize=9)
    figure.suptitle(f"{report['device']}, {report['date']}: library modes (solid) and bare twins (faded)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,fashion_mlp,cnn,gpt")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--modes", help="comma-separated subset of torch and jax modes (default: all for the device)")
    parser.add_argument("--batch-size", type=int, help="one batch size for every model (default: per model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fused-unroll",
        type=int,
        default=0,
        help="lax.scan unroll of the JAX fused modes (default 0: the CNN unrolled on CPU, else rolled)",
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    report = measure(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = f"_b{args.batch_size}" if args.batch_size else ""  # default per-model batches carry no tag
    stem = f"throughput_{args.device}_{args.precision}{batch}_{report['date']}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(render(report))
    chart(report, out / f"{stem}.png")
    print(render(report))
    print(f"wrote {out / stem}.json, .md, .png")
    return 0


def worker_command(args: argparse.Namespace, backend: str, target: Path) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.throughput", "--worker", backend, "--worker-json", str(target)]
    command += ["--models", args.models, "--precision", args.precision, "--device", args.device]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    command += ["--fused-unroll", str(args.fused_unroll)]
    return (
        command
        + (["--modes", args.modes] if args.modes else [])
        + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    )


def run_workers(command_for: Callable[[str, Path], list[str]]) -> dict[str, dict[str, Any]]:
    """Each backend in its own process (command_for(backend, json_path)); their JSON results by backend."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for backend in ("torch", "jax"):
            target = Path(scratch) / f"{backend}.json"
            command = command_for(backend, target)
            print(f"$ {' '.join(command)}", flush=True)
            subprocess.run(command, check=True)
            results[backend] = json.loads(target.read_text())
    return results


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run both backend processes and build the report (rows, ratios, metadata)."""
    from benchmarks.workloads import step_flops, tokens_per_sample, workload_batches, workload_config

    results = run_workers(lambda backend, target: worker_command(args, backend, target))
    rows = []
    for result in results.values():
        for row in result["rows"]:
            config = workload_config(row["model"], row["batch_size"], args.precision, args.device)
            _, _, out_dim, shape = workload_batches(config, 1)
            tokens = tokens_per_sample(config, shape)
            rows.append(summarize(row, step_flops(config, shape, out_dim), result["peak_flops"], tokens))
    return {
        "device": results["torch"]["device"],
        "date": datetime.date.today().isoformat(),
        "versions": ", ".join(r["version"] for r in results.values()),
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "peak_flops": {b: r["peak_flops"] for b, r in results.items()},
        "rows": rows,
        "ratios": ratios(rows),
    }


if __name__ == "__main__":
    raise SystemExit(main())
