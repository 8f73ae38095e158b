"""The library against its peers on each framework: the same training run, written each peer's way.

    python -m benchmarks.peers [--device cpu|cuda] [--workloads default,digits_cnn,gpt] [--programs ...]
        [--epochs 10] [--repeats 3] [--out benchmarks/results; --smoke: runs/benchmarks] [--smoke]

Programs (benchmarks/peer_programs/): torch: torchloop as shipped (the recipe's dropout_mode, parity
for the default and gpt recipes) and with dropout_mode framework, a plain seed-style PyTorch loop,
Lightning's Trainer; JAX: flaxloop (the same two), a plain Flax-examples loop, Keras 3 on JAX. Each
reads the recipe, with the same overrides (epochs, early stopping and checkpoints off, the device),
from the library's Config: the same model, data, optimizer, schedule, loss and precision; what a
peer cannot express exactly is said in its row. Keras and Lightning are the `[bench]` extra; a peer
whose package is missing is listed as not installed and skipped.

Each run is its own process; the repeats go round robin over every program and workload, so a
slow spell of a shared machine lands on all of them alike. Inside each program an epoch clock
(the library's record sink, Keras's and Lightning's callbacks, the plain loops' own lines) stamps
the end of every epoch's training phase and of its validation; from outside, the whole run is
timed from launch to exit (interpreter start, imports, data, compilation, every epoch). Reported:
the median steady-state epoch (epochs 2..N: the first one compiles) and update, their spread, the
whole run, and each as a ratio to the fastest peer (not the library) on the same framework. The
targets are printed as measured ratios; nothing here passes or fails on speed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from loopspec.cli import OneLineParser
from loopspec.config import load_config
from loopspec.data import load_dataset
from loopspec.errors import UserError
from loopspec.schedules import plan_schedule

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "not installed (pip install -e .[bench])"
EPOCH_TARGET, RUN_TARGET = 1.05, 1.0


@dataclass(frozen=True)
class Workload:
    recipe: str
    smoke: tuple[str, ...]  # overrides that make --smoke's subset


WORKLOADS = {
    "default": Workload("intrusion_mlp_focal", ("data.num_samples=1280",)),
    "digits_cnn": Workload("digits_cnn", ("data.val_fraction=0.8",)),
    "gpt": Workload("gpt_char", ("data.stride=32", "schedule.warmup=5")),
}


@dataclass(frozen=True)
class Program:
    framework: str  # "torch" or "jax": ratios are taken within one framework
    module: str
    args: tuple[str, ...]
    packages: tuple[str, ...]
    label: str
    differs: str  # what differs from the library's run, on every workload
    library: bool = False
    dropout_mode: Optional[str] = None  # the library run with this dropout_mode instead of the recipe's

    per_workload: tuple[tuple[str, str], ...] = ()  # (workload, what else differs on that one)

    def applies(self, recipe_dropout_mode: str) -> bool:
        """The framework-dropout variant only where the recipe ships parity dropout."""
        return self.dropout_mode is None or recipe_dropout_mode == "parity"


LIBRARY_DIFFERS = "the library as users run it: `python -m {}.train --config {{recipe}} --quiet`"
PROGRAMS = {
    "torchloop": Program(
        "torch",
        "benchmarks.peer_programs.library",
        ("--backend", "torch"),
        ("torch",),
        "torchloop (recipe as shipped)",
        LIBRARY_DIFFERS.format("torchloop"),
        library=True,
    ),
    "torchloop_framework": Program(
        "torch",
        "benchmarks.peer_programs.library",
        ("--backend", "torch"),
        ("torch",),
        "torchloop, dropout_mode: framework",
        "torch's own dropout instead of the shipped parity masks",
        library=True,
        dropout_mode="framework",
    ),
    "torch_plain": Program(
        "torch",
        "benchmarks.peer_programs.torch_plain",
        (),
        ("torch",),
        "plain PyTorch loop (seed style)",
        "DataLoader(TensorDataset) over the library's batch order, loss.item() each batch; torch's default init "
        "(nanoGPT's normal(0, 0.02) for the gpt)",
        per_workload=(("gpt", "attention in scaled_dot_product_attention"),),
    ),
    "lightning": Program(
        "torch",
        "benchmarks.peer_programs.lightning_peer",
        (),
        ("torch", "lightning"),
        "Lightning Trainer",
        "the plain loop's model and DataLoader in a LightningModule; logger, checkpoints, progress bar off; "
        "other Trainer defaults (a 2-batch sanity validation, the model summary)",
    ),
    "flaxloop": Program(
        "jax",
        "benchmarks.peer_programs.library",
        ("--backend", "jax"),
        ("jax", "flax", "optax"),
        "flaxloop (recipe as shipped)",
        LIBRARY_DIFFERS.format("flaxloop"),
        library=True,
    ),
    "flaxloop_framework": Program(
        "jax",
        "benchmarks.peer_programs.library",
        ("--backend", "jax"),
        ("jax", "flax", "optax"),
        "flaxloop, dropout_mode: framework",
        "JAX's own dropout keys instead of the shipped parity masks",
        library=True,
        dropout_mode="framework",
    ),
    "flax_plain": Program(
        "jax",
        "benchmarks.peer_programs.flax_plain",
        (),
        ("jax", "flax", "optax"),
        "plain Flax loop (Flax-examples style)",
        "TrainState, jitted train_step, host NumPy batches in the library's order; flax's default init",
        per_workload=(
            ("default", "the per-epoch cosine as an optax schedule of the update count"),
            ("digits_cnn", "images NHWC"),
        ),
    ),
    "keras": Program(
        "jax",
        "benchmarks.peer_programs.keras_peer",
        (),
        ("keras", "jax"),
        "Keras 3 on JAX, model.fit",
        "fit on NumPy arrays with Keras's own shuffle; Keras's default init; Adam's epsilon as Keras adds it",
        per_workload=(
            ("default", "the per-epoch cosine by a LearningRateScheduler callback"),
            ("digits_cnn", "images NHWC"),
            ("gpt", "attention in MultiHeadAttention (separate q, k, v kernels)"),
        ),
    ),
}


def missing_packages(program: Program) -> list[str]:
    """The packages of `program` this interpreter cannot import (its processes run on the same one)."""
    return [name for name in program.packages if importlib.util.find_spec(name) is None]


def overrides(args: argparse.Namespace, workload: Workload, program: Program) -> list[str]:
    """What turns the recipe into the benchmark's run, the same for every program."""
    sets = [
        f"train.epochs={args.epochs}",
        "train.early_stopping.enabled=false",
        "train.checkpoint.every_epoch=false",
        f"train.device={args.device}",
    ]
    sets += list(workload.smoke) if args.smoke else []
    return sets + ([f"model.dropout_mode={program.dropout_mode}"] if program.dropout_mode else [])


def environment(device: str) -> dict[str, str]:
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # the JAX programs on the CPU even where a GPU is installed
    return env


def run_once(args: argparse.Namespace, workload: Workload, program: Program, scratch: Path, tag: str) -> dict[str, Any]:
    """One program, one process: its epoch clock's record, and the whole run timed from outside."""
    result, log = scratch / f"{tag}.json", scratch / f"{tag}.log"
    sets = [item for override in overrides(args, workload, program) for item in ("--set", override)]
    command = [sys.executable, "-m", program.module, *program.args, "--config", workload.recipe, *sets]
    command += ["--result", str(result)]
    launched, started = time.time(), time.perf_counter()
    with open(log, "w") as output:
        done = subprocess.run(command, cwd=ROOT, env=environment(args.device), stdout=output, stderr=subprocess.STDOUT)
    whole = time.perf_counter() - started
    if done.returncode != 0 or not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        print(f"  {tag}: FAILED (exit {done.returncode})\n{tail}", flush=True)
        return {"failed": done.returncode, "log_tail": tail}
    record = json.loads(result.read_text())
    record.update(whole_run_s=whole, launched=launched)
    return record


def steady(record: dict[str, Any]) -> dict[str, Any]:
    """Epochs 2..N of one run: seconds per epoch (end to end) and per update (training phase)."""
    ends, train_ends, updates = record["epoch_end"], record["train_end"], record["updates"]
    epochs = [b - a for a, b in zip(ends, ends[1:])]
    per_update = [(t - a) / n for a, t, n in zip(ends, train_ends[1:], updates[1:])]
    return {
        "epoch_s": epochs,
        "update_s": per_update,
        "first_epoch_done_s": record["wall_epoch_end"][0] - record["launched"],
        "whole_run_s": record["whole_run_s"],
        "val_loss": record["val_loss"][-1],
        "updates_per_epoch": updates[-1],
    }


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each run's median; the spread between repeats (within the one
    run's steady epochs when there is a single repeat)."""
    per_run = [steady(r) for r in runs]
    epoch = [statistics.median(r["epoch_s"]) for r in per_run]
    update = [statistics.median(r["update_s"]) for r in per_run]
    whole = [r["whole_run_s"] for r in per_run]
    return {
        "ms_per_update": statistics.median(update) * 1e3,
        "ms_per_epoch": statistics.median(epoch) * 1e3,
        "spread": spread(epoch) if len(epoch) > 1 else spread(per_run[0]["epoch_s"]),
        "whole_run_s": statistics.median(whole),
        "whole_run_spread": spread(whole),
        "first_epoch_done_s": statistics.median(r["first_epoch_done_s"] for r in per_run),
        "val_loss": statistics.median(r["val_loss"] for r in per_run),
        "updates_per_epoch": per_run[0]["updates_per_epoch"],
        "samples": {
            "ms_per_epoch": [e * 1e3 for e in epoch],
            "ms_per_update": [u * 1e3 for u in update],
            "whole_run_s": whole,
        },
    }


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """The (workload, program) runs, and a row for each program skipped for a missing package."""
    runs, skipped = [], []
    for name in args.workloads:
        check_workload(args, WORKLOADS[name])
        shipped_dropout = load_config(WORKLOADS[name].recipe).model.dropout_mode
        for key in args.programs:
            program = PROGRAMS[key]
            if not program.applies(shipped_dropout):
                continue
            missing = missing_packages(program)
            if missing:
                skipped.append(row_head(name, key) | {"status": f"{INSTALL_HINT}: {', '.join(missing)}"})
            else:
                runs.append((name, key))
    return runs, skipped


def check_workload(args: argparse.Namespace, workload: Workload) -> None:
    """The run every program makes is a valid one (raises loopspec's UserError): checked once, here,
    with the library's own rules (the schedule's against the data's length too)."""
    config = load_config(workload.recipe, overrides(args, workload, PROGRAMS["torch_plain"]))
    plan_schedule(config, len(load_dataset(config.data).y_train))


def row_head(workload: str, key: str) -> dict[str, Any]:
    program = PROGRAMS[key]
    return {
        "workload": workload,
        "recipe": WORKLOADS[workload].recipe,
        "program": key,
        "label": program.label,
        "framework": program.framework,
        "library": program.library,
        "shipped": program.library and program.dropout_mode is None,
        "differs": "; ".join(
            [program.differs.format(recipe=WORKLOADS[workload].recipe)]
            + [text for name, text in program.per_workload if name == workload]
        ),
    }


def measure(args: argparse.Namespace, runs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every run `args.repeats` times, round robin; one row per (workload, program)."""
    records: dict[tuple[str, str], list[dict[str, Any]]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for workload, key in runs:
                tag = f"{workload}-{key}-{repeat + 1}"
                record = run_once(args, WORKLOADS[workload], PROGRAMS[key], Path(scratch), tag)
                records[workload, key].append(record)
                if "failed" not in record:
                    epochs = steady(record)["epoch_s"]
                    median = statistics.median(epochs) * 1e3 if epochs else float("nan")
                    print(f"  {tag}: {median:.0f} ms/epoch, whole run {record['whole_run_s']:.1f} s", flush=True)
    rows = []
    for (workload, key), runs_of in records.items():
        failed = [r for r in runs_of if "failed" in r]
        if failed:
            rows.append(row_head(workload, key) | {"status": f"failed (exit {failed[0]['failed']})", **failed[0]})
        else:
            rows.append(
                row_head(workload, key)
                | {"status": "ok", "version": runs_of[0]["version"], "device": runs_of[0]["device"]}
                | summarize(runs_of)
            )
    return rows


METRICS = ("ms_per_update", "ms_per_epoch", "whole_run_s")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each measured row's metrics as ratios to the fastest peer (not the library) on its framework."""
    for row in rows:
        if row["status"] != "ok":
            continue
        peers = [
            r
            for r in rows
            if r["status"] == "ok"
            and not r["library"]
            and r["workload"] == row["workload"]
            and r["framework"] == row["framework"]
        ]
        for metric in METRICS:
            fastest = min(peers, key=lambda r: r[metric], default=None)
            row[f"{metric}_ratio"] = None if fastest is None else row[metric] / fastest[metric]
            row[f"{metric}_fastest_peer"] = None if fastest is None else fastest["program"]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for the library as shipped, as measured ratios (printed, never asserted)."""
    out = []
    for row in rows:
        if not row.get("shipped") or row["status"] != "ok" or row["ms_per_epoch_ratio"] is None:
            continue
        for metric, target in (("ms_per_epoch", EPOCH_TARGET), ("whole_run_s", RUN_TARGET)):
            ratio = row[f"{metric}_ratio"]
            out.append(
                {
                    "what": f"{row['workload']}: {row['program']} {metric} / fastest {row['framework']} peer "
                    f"({row[f'{metric}_fastest_peer']})",
                    "ratio": ratio,
                    "target": f"<= {target:.2f}",
                    "met": ratio <= target,
                }
            )
    return out


def ratio_cell(row: dict[str, Any], metric: str) -> str:
    ratio = row.get(f"{metric}_ratio")
    return "-" if ratio is None else f"{ratio:.2f}"


def render_row(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"| {row['label']} | {row['status']} | | | | | | | | | |"
    return (
        f"| {row['label']} | {row['ms_per_update']:.2f} | {row['ms_per_epoch']:.0f} | {row['spread']:.0%} | "
        f"{row['first_epoch_done_s']:.1f} | {row['whole_run_s']:.1f} ({row['whole_run_spread']:.0%}) | "
        f"{ratio_cell(row, 'ms_per_update')} | {ratio_cell(row, 'ms_per_epoch')} | {ratio_cell(row, 'whole_run_s')} | "
        f"{row['val_loss']:.4g} | {row['differs']} |"
    )


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Peers: {report['device']}, {report['date']}{' (smoke)' if report['smoke'] else ''}",
        "",
        f"{report['machine']}. {report['epochs']} epochs per run, early stopping and checkpoints off, console "
        f"output off; {report['repeats']} repeat(s), round robin over every program, each run its own process. "
        "ms/update: the training phase of an epoch over its updates; ms/epoch: end of one epoch to the next "
        "(training and validation); both the median of epochs 2..N (the first compiles), over the repeats' "
        "medians; spread (max - min) / median of the repeats' epochs (of one run's epochs with one repeat). "
        "1st epoch s: launch to the end of the first epoch; whole run: launch to exit. Ratios: to the fastest "
        "peer (not the library) on the same framework. val loss: the last epoch's, a check that every program "
        "trains the same way.",
        "",
        "Versions: " + "; ".join(sorted({r["version"] for r in report["rows"] if r.get("version")})),
    ]
    for workload in dict.fromkeys(r["workload"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["workload"] == workload]
        updates = next((r["updates_per_epoch"] for r in rows if r["status"] == "ok"), "?")
        lines += [
            "",
            f"## {workload} (recipe {rows[0]['recipe']}, {updates} updates an epoch)",
            "",
            "| program | ms/update | ms/epoch | spread | 1st epoch s | whole run s (spread) | update ratio "
            "| epoch ratio | run ratio | val loss | how it differs |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *(render_row(r) for r in rows),
        ]
    if report["smoke"]:  # 2 epochs, 1 repeat, subsets of the data: the tables' form, not the targets
        lines += ["", "A smoke run checks that every program runs and reports; it is too short to judge the targets."]
    lines += ["", "| target | measured ratio | target value | met |", "|---|---|---|---|"]
    lines += [
        f"| {t['what']} | {t['ratio']:.3f} | {t['target']} | {'yes' if t['met'] else 'no'} |" for t in report["targets"]
    ]
    return "\n".join(lines) + "\n"


def machine(device: str, rows: list[dict[str, Any]]) -> str:
    """The CPU (model and cores), or the GPU the programs reported."""
    if device == "cuda":
        return ", ".join(sorted({r["device"] for r in rows if r.get("device")})) or "cuda"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--programs", default=",".join(PROGRAMS), help=f"comma-separated, of {', '.join(PROGRAMS)}")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 10; --smoke 2); at least 2")
    parser.add_argument("--repeats", type=int, help="runs of each program (default 3; --smoke 1)")
    parser.add_argument("--out", help="default benchmarks/results (what is committed); with --smoke runs/benchmarks")
    parser.add_argument("--smoke", action="store_true", help="CI's dry run: 2 epochs, 1 repeat, small subsets")
    args = parser.parse_args(argv)
    for flag, known in (("workloads", WORKLOADS), ("programs", PROGRAMS)):
        names = [n for n in getattr(args, flag).split(",") if n]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            parser.error(f"--{flag}: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
        setattr(args, flag, names)
    args.epochs = args.epochs if args.epochs is not None else (2 if args.smoke else 10)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 3)
    args.out = args.out or ("runs/benchmarks" if args.smoke else "benchmarks/results")  # a dry run is not a result
    if args.epochs < 2:
        parser.error(f"--epochs {args.epochs}: needs at least 2 (the first epoch compiles; the rest are timed)")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: needs at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        runs, skipped = plan(args)
    except UserError as err:
        print(f"python -m benchmarks.peers: error: {err}", file=sys.stderr)
        return 2
    for row in skipped:
        print(f"  {row['workload']}-{row['program']}: {row['status']}", flush=True)
    rows = measure(args, runs) + skipped
    order = {(w, p): i for i, (w, p) in enumerate((w, p) for w in args.workloads for p in args.programs)}
    rows.sort(key=lambda r: order[r["workload"], r["program"]])
    add_ratios(rows)
    date = datetime.date.today().isoformat()
    report = {
        "device": args.device,
        "machine": machine(args.device, rows),
        "date": date,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "smoke": args.smoke,
        "rows": rows,
        "targets": targets(rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subset = "" if args.workloads == list(WORKLOADS) else "_" + "-".join(args.workloads)
    stem = f"peers_{args.device}{'_smoke' if args.smoke else ''}{subset}_{date}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(render(report))
    print(render(report))
    print(f"wrote {out / stem}.json, .md")
    failed = [f"{r['workload']}-{r['program']}" for r in rows if r["status"].startswith("failed")]
    if failed:
        print(f"python -m benchmarks.peers: failed: {', '.join(failed)} (their logs are above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
