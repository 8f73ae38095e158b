"""Train one config on both backends and print a parity summary (the README's main job).

    python -m parity_tests.run [--config FILE] [--out DIR] [--dtype float32|float64] [--set k=v ...]

Each backend runs in its own process through its CLI, as a user would run it. In float64
the whole run is judged at 1e-10 relative; in float32 the first 10 steps are judged at
1e-5 and the rest is reported (float32 rounding differences grow over a long run: see
README, "What parity means").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from loopspec.metrics import read_metrics
from parity_tests.compare import compare_runs

DEFAULT_CONFIG = "configs/intrusion_mlp_focal.yaml"
BACKENDS = {"torch": "torchloop.train", "jax": "flaxloop.train"}
FLOAT64_RTOL = 1e-10
FLOAT32_RTOL, FLOAT32_STEPS = 1e-5, 10


def train_both(config: str, out: Path, overrides: Sequence[str], dtype: Optional[str]) -> None:
    for backend, module in BACKENDS.items():
        command = [sys.executable, "-m", module, "--config", config, "--out", str(out / backend)]
        command += [arg for item in overrides for arg in ("--set", item)]
        command += ["--dtype", dtype] if dtype else []
        print(f"$ {' '.join(command)}", flush=True)
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(result.returncode)


def summarize(out: Path) -> int:
    """Print the parity summary for out/torch and out/jax; return the exit code."""
    dtype = json.loads((out / "torch" / "config.json").read_text())["train"]["dtype"]
    torch_run, jax_run = out / "torch", out / "jax"
    whole = compare_runs(torch_run, jax_run, FLOAT64_RTOL)
    print("\n=== parity summary (torch vs jax) ===")
    print(f"dtype {dtype}; runs in {torch_run} and {jax_run}")
    if dtype == "float64":
        agree = whole.agree
        print(whole.render())
        verdict = f"whole run within {FLOAT64_RTOL:g} relative" if whole.agree else f"NOT within {FLOAT64_RTOL:g}"
    else:
        first = compare_runs(torch_run, jax_run, FLOAT32_RTOL, steps=FLOAT32_STEPS)
        agree = first.max_rel("step loss") <= FLOAT32_RTOL
        print(f"first {FLOAT32_STEPS} steps: max rel diff loss {first.max_rel('step loss'):.2e} "
              f"(tolerance {FLOAT32_RTOL:g}), grad_norm {first.max_rel('step grad_norm'):.2e}")
        print(f"whole run: max rel diff loss {whole.max_rel('step loss'):.2e} "
              "(float32 rounding differences grow with steps; parity over a whole run is judged in float64)")
        verdict = f"first {FLOAT32_STEPS} steps' loss {'within' if agree else 'NOT within'} {FLOAT32_RTOL:g}"
    summaries = {name: read_metrics(out / name / "metrics.jsonl")["summary"][-1] for name in BACKENDS}
    keys = [k for k in ("val_loss", "val_acc", "val_precision", "val_recall", "val_f1") if k in summaries["torch"]]
    print(f"{'final (saved weights)':<22}" + "".join(f"{k:>14}" for k in ["steps", "epoch", *keys]))
    for name, summary in summaries.items():
        print(f"{name:<22}" + f"{summary['steps']:>14}{summary['final_epoch']:>14}"
              + "".join(f"{summary[k]:>14.4f}" for k in keys))
    print(f"verdict: {'PASS' if agree else 'FAIL'}: {verdict}")
    return 0 if agree else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.run", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--out", default="runs/default", help="parent directory of the torch/ and jax/ runs")
    parser.add_argument("--dtype", choices=("float32", "float64"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out)
    train_both(args.config, out, args.set, args.dtype)
    return summarize(out)


if __name__ == "__main__":
    raise SystemExit(main())
