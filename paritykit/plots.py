"""Plots: schedules side by side with both backends overlaid, and runs' lr and loss.

    python -m paritykit.plots schedules [CONFIG ...] [--metrics RUN/metrics.jsonl] --out FILE.png
    python -m paritykit.plots runs RUN_A [RUN_B] --out FILE.png

`schedules` draws each config's learning rate against the optimizer step as torch's
scheduler produces it (line) and as the JAX side does (dots), with OneCycle's momentum on
a second axis; the default configs are the training-loop lab's four-scheduler
comparison: step, cosine, OneCycle and plateau. A plateau schedule follows a recorded
metric, the monitored column of the run given by --metrics. `runs` draws lr and loss
against step from one or two runs' metrics.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from loopspec.cli import command_name  # noqa: E402
from loopspec.config import Config, load_config  # noqa: E402
from loopspec.data import load_dataset  # noqa: E402
from loopspec.errors import UserError  # noqa: E402
from loopspec.loop import monitored_value  # noqa: E402
from loopspec.metrics import read_metrics  # noqa: E402
from loopspec.schedules import SchedulePlan, plan_schedule, schedule_horizon  # noqa: E402
from paritykit.schedule_values import jax_values, max_relative_difference, torch_values  # noqa: E402

FOUR_SCHEDULERS = [
    "schedule_step",
    "schedule_cosine",
    "schedule_onecycle",
    "schedule_plateau",
]
TORCH_STYLE: dict[str, Any] = {"color": "tab:blue", "linewidth": 2, "label": "torch lr"}
JAX_STYLE: dict[str, Any] = {
    "color": "tab:orange",
    "marker": ".",
    "markersize": 3,
    "linestyle": "none",
    "label": "jax lr",
}


def recorded_metric(config: Config, metrics_path: Optional[str]) -> list[float]:
    monitor = config.schedule.monitor
    if metrics_path is None:
        raise UserError(f"schedule plateau follows a recorded metric ({monitor}): pass --metrics RUN/metrics.jsonl")
    epochs = read_metrics(metrics_path)["epoch"]
    if not epochs:
        raise UserError(f"{metrics_path} has no epoch records to read {monitor} from")
    return [monitored_value(monitor, record["train_loss"], record) for record in epochs]


def draw_schedule(axis: plt.Axes, path: str, metrics_path: Optional[str]) -> None:
    config = load_config(path)
    plan = plan_schedule(config, len(load_dataset(config.data).y_train))
    metrics = recorded_metric(config, metrics_path) if config.schedule.name == "plateau" else None
    if metrics is not None:  # only as many epochs as were recorded
        epochs = min(plan.epochs, len(metrics))
        plan = SchedulePlan(plan.name, plan.interval, plan.updates_per_epoch, epochs * plan.updates_per_epoch, epochs)
    length = schedule_horizon(config, plan)
    base_lr = config.optimizer.lr
    torch_lr, torch_momentum = torch_values(config.schedule, config.optimizer.name, base_lr, plan, length, metrics)
    jax_lr, jax_momentum = jax_values(config.schedule, base_lr, plan, length, metrics)
    steps = range(1, plan.total_updates + 1)
    axis.plot(steps, torch_lr, **TORCH_STYLE)
    axis.plot(steps, jax_lr, **JAX_STYLE)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("learning rate")
    gap = max_relative_difference(jax_lr, torch_lr)
    title = f"{config.schedule.name} ({Path(path).stem}, per {plan.interval})\nmax rel diff lr {gap:.1e}"
    if torch_momentum is not None:
        assert jax_momentum is not None  # both sides cycle momentum, or neither
        twin = axis.twinx()
        twin.plot(steps, torch_momentum, color="tab:green", linewidth=1.5, label="torch momentum")
        twin.plot(
            steps, jax_momentum, color="tab:red", marker=".", markersize=2, linestyle="none", label="jax momentum"
        )
        twin.set_ylabel("momentum / beta1")
        twin.legend(loc="center right", fontsize=8)
        title += f", momentum {max_relative_difference(jax_momentum, torch_momentum):.1e}"
    if metrics is not None:
        title += f"\non recorded {config.schedule.monitor} ({len(metrics)} epochs)"
    axis.set_title(title, fontsize=9)
    axis.legend(loc="upper right", fontsize=8)


def plot_schedules(configs: Sequence[str], out: str, metrics_path: Optional[str]) -> None:
    columns = min(len(configs), 2)
    rows = -(-len(configs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for axis, path in zip(axes.flat, configs):
        draw_schedule(axis, path, metrics_path)
    for axis in list(axes.flat)[len(configs) :]:
        axis.set_visible(False)
    figure.suptitle("Learning-rate schedules: torch.optim.lr_scheduler (line) and the JAX side (dots)")
    figure.tight_layout()
    save(figure, out)


def resolution(run: str) -> float:
    """The relative resolution of a run's recorded values: float64's for fp64 runs, else float32's
    (mixed-precision runs keep float32 weights, losses and rates)."""
    precision = load_config(str(Path(run) / "config.json")).train.precision
    return float(np.finfo(np.float64 if precision == "fp64" else np.float32).eps)


def relative_gaps(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-300)


def plot_runs(runs: Sequence[str], out: str) -> dict[str, list[str]]:
    """lr, loss (and momentum) against step; of two runs, a series that agrees within the precision's
    resolution is drawn once ("A = B"), and a last panel shows every series' relative difference.
    Returns each panel's line labels."""
    records = {run: read_metrics(Path(run) / "metrics.jsonl") for run in runs}
    has_momentum = any("momentum" in r["step"][0] for r in records.values() if r["step"])
    panels = ["loss", "lr"] + (["momentum"] if has_momentum else [])
    pair = len(runs) == 2
    figure, axes = plt.subplots(len(panels) + pair, 1, figsize=(9, 3.2 * (len(panels) + pair)), sharex=True)
    labels = {
        run: f"{run} ({record['summary'][-1]['backend'] if record['summary'] else '?'})"
        for run, record in records.items()
    }
    applied = {run: [s for s in record["step"] if not s.get("skipped")] for run, record in records.items()}
    finest = max(resolution(run) for run in runs)
    drawn: dict[str, list[str]] = {}
    for axis, panel in zip(axes, panels):
        series = {
            run: ([s["step"] for s in steps if panel in s], [s[panel] for s in steps if panel in s])
            for run, steps in applied.items()
        }
        same = pair and len({len(v[1]) for v in series.values()}) == 1
        gaps = relative_gaps(*(v[1] for v in series.values())) if same else None
        if gaps is not None and len(gaps) and gaps.max() <= finest:
            steps, values = next(iter(series.values()))
            axis.plot(steps, values, linewidth=1.2, label=f"{' = '.join(labels.values())} (within {finest:.1e})")
        else:
            for index, (run, (steps, values)) in enumerate(series.items()):
                style = {"linewidth": 1.2} if index == 0 else {"linewidth": 1.0, "linestyle": "--"}
                axis.plot(steps, values, label=labels[run], **style)
        if pair and gaps is not None and len(gaps):
            axes[-1].semilogy(series[runs[0]][0], np.maximum(gaps, 1e-18), label=panel, linewidth=1.0)
        axis.set_ylabel(panel)
        axis.ticklabel_format(axis="y", useOffset=False)
        axis.legend(fontsize=8)
        drawn[panel] = [line.get_label() for line in axis.get_lines()]
    if pair:
        axes[-1].axhline(finest, color="gray", linestyle=":", label=f"resolution {finest:.1e}")
        axes[-1].set_ylabel("relative difference")
        axes[-1].legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[-1].set_xlabel("optimizer step")
    figure.tight_layout()
    save(figure, out)
    return drawn


def save(figure: plt.Figure, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    print(f"wrote {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=command_name("paritykit.plots", argv), description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    schedules = commands.add_parser("schedules", help="schedules side by side, both backends overlaid")
    schedules.add_argument(
        "configs", nargs="*", default=FOUR_SCHEDULERS, help="config files (default: step, cosine, onecycle, plateau)"
    )
    schedules.add_argument("--metrics", help="a run's metrics.jsonl whose monitored column drives plateau")
    schedules.add_argument("--out", default="schedules.png")
    runs = commands.add_parser("runs", help="lr and loss against step from one or two runs")
    runs.add_argument("runs", nargs="+", help="one or two run directories")
    runs.add_argument("--out", default="runs.png")
    args = parser.parse_args(argv)
    try:
        if args.command == "schedules":
            plot_schedules(args.configs or FOUR_SCHEDULERS, args.out, args.metrics)
        else:
            if len(args.runs) > 2:
                raise UserError("plots runs takes one or two run directories")
            for run in args.runs:
                if not (Path(run) / "metrics.jsonl").is_file():
                    raise UserError(f"{run} is not a run directory (no metrics.jsonl)")
            plot_runs(args.runs, args.out)
    except UserError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
