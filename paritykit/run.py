"""Train one config on both backends and print a parity summary (the README's main job).

    python -m paritykit.run [--config FILE] [--out DIR] [--dtype float32|float64] [--set k=v ...]

Each backend runs in its own process through its CLI, as a user would run it. Without
--dtype the config runs twice:

- float64, where the promise is exact: the whole run (per-step loss, lr, grad_norm,
  validation metrics, weights) is judged at 1e-10 relative;
- float32, how one trains: the first FLOAT32_HORIZON steps are judged against what rounding
  alone does to this config on this machine (each backend again from weights and inputs
  moved by one ulp, torch also with its other CPU kernels; paritykit/sensitivity.py); the
  whole run and the final metrics are reported. Float32 rounding differs between XLA and ATen
  from the first operation and grows with training (README, "What parity means").

The exit code is 0 when every judged check holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from loopspec.backends import BACKEND_PACKAGES, FRAMEWORK_MODULES, how_to_install, missing_modules
from loopspec.cli import command_name
from loopspec.comparison import compare_runs
from loopspec.config import Config, load_config
from loopspec.errors import UserError
from loopspec.metrics import read_metrics
from paritykit.sensitivity import EXACT_ULPS, Trajectory, Verdict, exact_checks
from paritykit.sensitivity import HORIZON as FLOAT32_HORIZON

DEFAULT_CONFIG = "intrusion_mlp_focal"
BACKENDS = {backend: f"{package}.train" for backend, package in BACKEND_PACKAGES.items()}
FLOAT64_RTOL = 1e-10
METRICS = ("val_loss", "val_acc", "val_precision", "val_recall", "val_f1")


def train_both(
    config: str | Path, out: Path, overrides: Sequence[str], dtype: str, init: Optional[Path] = None
) -> None:
    for backend, module in BACKENDS.items():
        command = [
            sys.executable,
            "-m",
            module,
            "--config",
            str(config),
            "--out",
            str(out / backend),
            "--dtype",
            dtype,
            "--overwrite",
        ]
        command += [arg for item in overrides for arg in ("--set", item)]
        given = init
        if given is None and backend == "jax" and load_config(config, overrides).model.name == "custom":
            given = out / "torch" / "init.safetensors"  # a custom pair starts from torch's module's own init
        command += ["--init", str(given)] if given is not None else []
        print(f"$ {' '.join(command)}", flush=True)
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(result.returncode)


def final_metrics_table(out: Path) -> str:
    summaries = {name: read_metrics(out / name / "metrics.jsonl")["summary"][-1] for name in BACKENDS}
    keys = [k for k in METRICS if k in summaries["torch"]]
    lines = [f"  {'saved weights':<14}" + "".join(f"{k:>14}" for k in ["steps", "epoch", *keys])]
    for name, summary in summaries.items():
        lines.append(
            f"  {name:<14}{summary['steps']:>14}{summary['final_epoch']:>14}"
            + "".join(f"{summary[k]:>14.4f}" for k in keys)
        )
    return "\n".join(lines)


def summarize_float64(out: Path) -> bool:
    report = compare_runs(out / "torch", out / "jax", FLOAT64_RTOL)
    worst = max((row for row in report.rows if row.unit == "tensor"), key=lambda row: row.max_rel)
    print(f"float64 ({out}): whole run judged at {FLOAT64_RTOL:g} relative")
    print(
        f"  max rel diff: step loss {report.max_rel('step loss'):.1e}, "
        f"grad_norm {report.max_rel('step grad_norm'):.1e}, "
        f"val_loss {report.max_rel('epoch val_loss'):.1e}, weights {worst.max_rel:.1e} ({worst.quantity})"
    )
    print(final_metrics_table(out))
    if not report.agree:
        print(report.render())
    print(
        f"  {'PASS' if report.agree else 'FAIL'}: the two backends {'agree' if report.agree else 'DISAGREE'} "
        f"to {FLOAT64_RTOL:g} over {report.rows[0].compared} steps"
    )
    return report.agree


def float32_sensitivity(config: str, overrides: Sequence[str], out: Path) -> Verdict:
    """The first FLOAT32_HORIZON steps on both backends, and again perturbed (paritykit/sensitivity.py).
    In this process: the perturbed torch run also switches torch's CPU kernels."""
    from paritykit.harness import sensitivity_verdict

    raw = load_config(config, overrides).to_dict()
    shutil.rmtree(out, ignore_errors=True)  # a rerun replaces the last one's sensitivity runs
    return sensitivity_verdict(raw, out, FLOAT32_HORIZON)


def whole_run_schedule(out: Path, plateau: bool) -> tuple[bool, str]:
    """The whole float32 run's lr and momentum against torch's, rounded once: exact at every update.
    A plateau schedule cuts on each run's own float32 metric, so there it is reported only."""
    checks = exact_checks(Trajectory.read(out / "torch"), Trajectory.read(out / "jax"))
    worst = ", ".join(f"{check.quantity} {check.cross:.2f} ulp (step {check.at})" for check in checks)
    exact = all(check.agree for check in checks)
    if plateau:
        return True, f"whole run, schedule: {worst}; plateau cuts follow each backend's own float32 metric (reported)"
    return exact, f"whole run, schedule: {worst}, {'within' if exact else 'NOT within'} {EXACT_ULPS:g} ulp"


def summarize_float32(out: Path, verdict: Verdict, plateau: bool = False) -> bool:
    whole = compare_runs(out / "torch", out / "jax", 1.0)
    print(
        f"float32 ({out}): the first {FLOAT32_HORIZON} updates of this run (its schedule unchanged) judged "
        "against each backend's own one-ulp sensitivity; the rest reported"
    )
    print("\n".join("  " + line for line in verdict.render().splitlines()))
    schedule_exact, schedule_line = whole_run_schedule(out, plateau)
    print(f"  {schedule_line}")
    print(
        f"  whole run, max rel diff: step loss {whole.max_rel('step loss'):.1e}, "
        f"val_loss {whole.max_rel('epoch val_loss'):.1e}"
    )
    print(final_metrics_table(out))
    agree = verdict.agree and schedule_exact
    print(
        f"  {'PASS' if agree else 'FAIL'}: the first {FLOAT32_HORIZON} updates "
        f"{'stay' if verdict.agree else 'do NOT stay'} "
        f"within {verdict.multiple:g} x the self-divergence envelope, and the learning rate "
        f"{'is' if schedule_exact else 'is NOT'} torch's at every update; later float32 steps part as training "
        "amplifies rounding (README, 'What parity means')"
    )
    return agree


MARKER = "parity-run.json"


def pair_check(config: Config) -> Any:
    """A custom pair's float64 probe (paritykit.pairs.check_models without its trainings)."""
    from paritykit.pairs import check_models

    return check_models(config, config.model.torch, config.model.flax, None, "", train=False)


def claim_output(out: Path, config: str, overwrite: bool) -> None:
    """parity-run replaces its own earlier output in --out, and nothing else: a directory that holds
    anything but a parity-run's runs is refused (one line) unless --overwrite."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory for the runs")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not overwrite:
        held = ", ".join(sorted(path.name for path in out.iterdir())[:3])
        raise UserError(
            f"--out {out} holds files parity-run did not write ({held}); choose another directory, or pass "
            "--overwrite to replace its runs"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"config": str(config)}) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=command_name("paritykit.run", argv), description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--out", default="runs/default", help="parent directory of the runs")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="run only this dtype (default: both)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even if parity-run did not write it")
    parser.add_argument("--torch-model", metavar="PKG.MODULE:FACTORY", help="your torch model (docs/models.md)")
    parser.add_argument("--flax-model", metavar="PKG.MODULE:FACTORY", help="its flax port (linen or nnx)")
    args = parser.parse_args(argv)
    if (args.torch_model is None) != (args.flax_model is None):
        parser.error("give both --torch-model and --flax-model (a pair), or neither")
    if args.torch_model is not None:
        args.set = [*args.set, "model.name=custom", f"model.torch={args.torch_model}", f"model.flax={args.flax_model}"]
    dtypes = [args.dtype] if args.dtype else ["float64", "float32"]
    try:
        missing = missing_modules(FRAMEWORK_MODULES)
        if missing:  # before the first backend's training, not after it
            lacking = ", ".join(missing)
            raise UserError(f"it trains both backends; {sys.executable} lacks {lacking}: {how_to_install('all')}")
        claim_output(Path(args.out), args.config, args.overwrite)
        config = load_config(args.config, args.set)
        if config.model.name == "custom":  # the pair check first: before any training time is spent
            pair = pair_check(config)
            print(pair.render())
            if not pair.agree:
                print("verdict: FAIL (the pair check found a difference before training)")
                return 1
    except UserError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    for dtype in dtypes:
        train_both(args.config, Path(args.out) / dtype, args.set, dtype)
    verdict, plateau = None, load_config(args.config, args.set).schedule.name == "plateau"
    if "float32" in dtypes:
        try:
            verdict = float32_sensitivity(args.config, args.set, Path(args.out) / "float32-sensitivity")
        except UserError as err:  # the whole runs trained; the verdict's cut run could not be made
            print(f"{parser.prog}: error: no float32 verdict for this config: {err}", file=sys.stderr)
            return 2
    print(f"\n=== parity summary: {args.config}, torch vs jax ===")
    results = [
        summarize_float64(Path(args.out) / "float64")
        if dtype == "float64"
        else summarize_float32(Path(args.out) / "float32", cast(Verdict, verdict), plateau)  # made above for float32
        for dtype in dtypes
    ]
    print(f"verdict: {'PASS' if all(results) else 'FAIL'}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
