"""The published parity report: `python -m paritykit.report` writes docs/PARITY.md and its figures.

    python -m paritykit.report [--out docs] [--quick]

It measures, on this machine, with the versions installed:
1. the pairwise design (parity_tests/pairwise.py): every pair of feature values in some float64 run,
   each trained on both backends; the worst per-step and final-weight difference per axis value,
   and a heatmap of the worst final-weight difference by pair of values;
2. the float32 verdict of the shipped recipes: each one's margin under its bound;
3. mixed precision: bf16 and fp16 accuracy over five seeds against float32, per backend;
4. a locator example: a LayerNorm eps planted on the JAX side of a small GPT, located and
   diagnosed, with a figure of the update's quantities in computing order.
`--quick` runs every fifth design row and one recipe (a dry run of the generator).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import itertools
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

RECIPES = {
    "intrusion_mlp_focal": (),
    "digits_cnn": (),
    "cnn_bn": (),
    "gpt_char": (),
}
MIXED_CASES = ("mlp",)


def versions() -> str:
    names = ("torch", "jax", "flax", "optax", "numpy")
    found = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)
    return f"Python {platform.python_version()}, {found}; {platform.machine()}, {os.cpu_count()} CPUs"


# ----------------------------------------------------------------------------- 1. the pairwise design


def design_section(root: Path, figures: Path, every: int) -> tuple[list[str], bool]:
    from parity_tests.pairwise import AXES, design, row_id, rows_by_axis, run_row

    rows = design()[::every]
    results = []
    for index, row in enumerate(rows):
        result = run_row(row, root / f"row-{index:02d}")
        print(
            f"design row {index + 1}/{len(rows)} {row_id(row)}: {'AGREE' if result.agree else 'DISAGREE'}", flush=True
        )
        results.append(result)
    agree = all(r.agree for r in results)
    lines = [
        "## The pairwise design, float64",
        "",
        f"{len(rows)} runs (`parity_tests/pairwise.py`), each trained on both backends and compared over "
        f"the whole run at 1e-10: {sum(r.agree for r in results)} agree"
        + ("." if agree else f"; {sum(not r.agree for r in results)} do not."),
        f"Axes: {', '.join(f'{axis} ({len(values)})' for axis, values in AXES.items())}. Every allowed pair of",
        "values of two axes is in some run.",
        "",
        "| axis | value | runs | worst per-step difference | worst final-weight difference |",
        "|---|---|---|---|---|",
    ]
    for axis, value, indices in rows_by_axis([r.row for r in results]):
        if not indices:
            continue
        step = max(results[i].worst_step for i in indices)
        weight = max(results[i].worst_weight for i in indices)
        lines.append(f"| {axis} | {value} | {len(indices)} | {step:.2g} | {weight:.2g} |")
    heatmap(results, figures / "parity_pairs.png")
    lines += ["", "![worst final-weight difference by pair of values](parity_pairs.png)", ""]
    return lines, agree


def heatmap(results: list[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from parity_tests.pairwise import AXES

    labels = [(axis, value) for axis, values in AXES.items() for value in values]
    grid = np.full((len(labels), len(labels)), np.nan)
    for result in results:
        for (i, a), (j, b) in itertools.combinations(enumerate(labels), 2):
            if result.row.get(a[0]) == a[1] and result.row.get(b[0]) == b[1]:
                value = math.log10(max(result.worst_weight, 1e-18))
                grid[i, j] = grid[j, i] = np.nanmax([grid[i, j], value])
    fig, ax = plt.subplots(figsize=(12, 10))
    image = ax.imshow(grid, cmap="viridis", vmin=-17, vmax=-10)
    names = [f"{axis}={value}" for axis, value in labels]
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(image, label="log10 worst final-weight relative difference (bound: -10)")
    ax.set_title("float64: worst torch-vs-JAX final-weight difference over the runs holding each pair")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- 2. float32 verdicts


def float32_section(root: Path, recipes: dict[str, tuple]) -> list[str]:
    from paritykit.harness import recipe, sensitivity_verdict

    lines = [
        "## The float32 verdict of the shipped recipes",
        "",
        "Each recipe's first 30 updates with its whole run's schedule, torch against JAX, judged against the",
        "one-ulp self-divergence envelope measured here (README, 'What parity means'). The margin is how",
        "many times the worst quantity could grow before it met its bound (above 1 agrees).",
        "",
        "| recipe | verdict | margin | worst quantity |",
        "|---|---|---|---|",
    ]
    for name, overrides in recipes.items():
        raw = recipe(f"configs/{name}.yaml", *overrides, "train.precision=fp32", "train.log_every=0", "train.verbose=0")
        verdict = sensitivity_verdict(raw, root / f"float32-{name}")
        worst = verdict.worst
        lines.append(
            f"| {name} | {'AGREE' if verdict.agree else 'DISAGREE'} | {verdict.margin:.3g} | {worst.quantity} |"
        )
        print(f"float32 {name}: margin {verdict.margin:.3g}", flush=True)
    lines += [
        "",
        "On the seven simulated machine profiles (`python -m parity_tests.profiles`) see",
        "[parity.md](parity.md); the gpt_char recipe's margin there: [gpt.md](gpt.md).",
        "",
    ]
    return lines


# ----------------------------------------------------------------------------- 3. mixed precision


def mixed_section(root: Path, cases: Sequence[str]) -> list[str]:
    from loopspec import fit
    from parity_tests.precision_cases import precision_case
    from paritykit.statistics import SEEDS, compare

    lines = [
        "## Mixed precision",
        "",
        "Final validation accuracy over seeds 0-4 (`parity_tests/precision_cases.py`); bf16 and fp16 against",
        "float32 on the same backend, one-sided Welch's t-test at 99% (better is not a failure).",
        "",
        "| model | backend | fp32 | bf16 | fp16 | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for model in cases:
        for backend in ("torch", "jax"):
            accuracy = {}
            for precision in ("fp32", "bf16", "fp16"):
                values = []
                for seed in SEEDS:
                    raw = precision_case(model, precision, seed)
                    raw["train"]["verbose"] = 0
                    out = root / f"mixed-{model}-{backend}-{precision}-{seed}"
                    values.append(fit(raw, out, backend=backend).summary["val_acc"])
                accuracy[precision] = values
            tests = [compare(p, accuracy[p], accuracy["fp32"], "less", comparisons=2) for p in ("bf16", "fp16")]
            cells = " | ".join(f"{np.mean(accuracy[p]):.4f} ± {np.std(accuracy[p], ddof=1):.4f}" for p in accuracy)
            verdict = "ok" if all(t.passed for t in tests) else "lower"
            lines.append(f"| {model} | {backend} | {cells} | {verdict} |")
            print(f"mixed {model} {backend}: {verdict}", flush=True)
    return [*lines, ""]


# ----------------------------------------------------------------------------- 4. a locator example


def locator_section(root: Path, figures: Path) -> list[str]:
    import flaxloop.models
    from loopspec import fit
    from paritykit.locate import locate

    config = {
        "seed": 1,
        "data": {"name": "text", "block_size": 16, "stride": 16, "batch_size": 16},
        "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"epochs": 1, "max_steps": 8, "precision": "fp64", "verbose": 0, "log_every": 0},
    }
    fit(config, root / "locate" / "torch", backend="torch")
    original = flaxloop.models.layer_norm
    flaxloop.models.layer_norm = lambda eps, *args: original(1e-6, *args)  # flax's default eps, planted
    try:
        fit(config, root / "locate" / "jax", backend="jax")
        location = locate(root / "locate" / "torch", root / "locate" / "jax", work_dir=root / "locate" / "replays")
    finally:
        flaxloop.models.layer_norm = original
    located_figure(location, figures / "parity_locate.png")
    text = location.render().replace(str(root / "locate") + "/", "")
    return [
        "## A located divergence",
        "",
        "A small GPT trained on both backends, with flax's default LayerNorm eps (1e-6) planted on the JAX",
        "side; `parity-locate torch jax`:",
        "",
        "```text",
        text,
        "```",
        "",
        "![the located update's quantities in computing order](parity_locate.png)",
        "",
    ]


def located_figure(location: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantities = location.quantities
    values = [max(q.rel, 1e-18) for q in quantities]
    colors = ["tab:green" if q.ok else "tab:red" for q in quantities]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(values)), values, color=colors)
    ax.set_yscale("log")
    ax.axhline(1e-10, color="black", linestyle="--", linewidth=1, label="1e-10")
    ax.set_xticks(range(len(values)), [f"{q.stage}: {q.name}" for q in quantities], rotation=90, fontsize=5)
    ax.set_ylabel("relative difference, torch vs JAX")
    ax.set_title(f"update {location.update}, both backends from the same state, in the order it computes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the page


def write_report(out: Path, quick: bool = False, work: Optional[Path] = None) -> bool:
    """docs/PARITY.md and its figures; True when every design row agrees."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parity-report-") as scratch:
        root = work or Path(scratch)
        design_lines, agree = design_section(root / "design", out, 5 if quick else 1)
        recipes = dict(list(RECIPES.items())[:1]) if quick else RECIPES
        body = [
            *design_lines,
            *float32_section(root, recipes),
            *mixed_section(root, () if quick else MIXED_CASES),
            *locator_section(root, out),
        ]
    header = [
        "# Parity report",
        "",
        f"Generated by `python -m paritykit.report` on {datetime.date.today().isoformat()}"
        + (" (--quick: a fifth of the design, one recipe)" if quick else "")
        + f": {versions()}.",
        "Every number below was measured in that run; regenerate with the same command.",
        "",
    ]
    (out / "PARITY.md").write_text("\n".join(header + body).rstrip() + "\n")
    return agree


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paritykit.report", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="where PARITY.md and the figures go (default docs)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the design and one recipe")
    args = parser.parse_args(argv)
    agree = write_report(Path(args.out), args.quick)
    print(f"wrote {Path(args.out) / 'PARITY.md'}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
