"""Regression check: rerun a short subset of a committed throughput report and fail if a
measured ratio moved by more than its noise band.

    python -m benchmarks.check [--baseline benchmarks/results/throughput_cpu_fp32_DATE.json] [--models mlp]

The band of a ratio is max(0.15, 2 x the largest spread (max-min)/median of the rows it
divides, in the baseline or the rerun): ratios on a busy 2-core machine move by that much on
their own. Exits 1 when any ratio left its band, 2 when there is no baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.throughput import measure

MIN_BAND = 0.15


def latest_baseline(device: str) -> Optional[Path]:
    found = sorted(Path("benchmarks/results").glob(f"throughput_{device}_fp32_2*.json"))  # default batches, by date
    return found[-1] if found else None


def spreads(report: dict) -> dict[str, float]:
    """The largest spread of the rows behind each ratio key (per backend and model)."""
    out: dict[str, float] = {}
    for row in report["rows"]:
        for key in (
            f"overhead/{row['backend']}/{row['model']}",
            f"fused/{row['model']}",
            f"backends/{row['model']}",
            f"cuda_graph/{row['model']}",
        ):
            out[key] = max(out.get(key, 0.0), row["spread"])
    return out


def band_for(key: str, *reports: dict) -> float:
    prefix = key.rsplit("/", 1)[0] if key.startswith("overhead/") else key
    return max([MIN_BAND] + [2 * spreads(r).get(prefix, 0.0) for r in reports])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.check", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a throughput JSON (default: the newest committed one for --device)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", default="mlp")
    args = parser.parse_args(argv)
    path = Path(args.baseline) if args.baseline else latest_baseline(args.device)
    if path is None or not path.is_file():
        print(f"{parser.prog}: error: no baseline report (run python -m benchmarks.throughput first)", file=sys.stderr)
        return 2
    baseline = json.loads(path.read_text())
    rerun = measure(
        argparse.Namespace(
            models=args.models,
            precision=baseline["precision"],
            device=args.device,
            modes=None,
            batch_size=None,
            steps=baseline["steps"],
            warmup=baseline["warmup"],
            repeats=baseline["repeats"],
            fused_unroll=0,
        )
    )
    old = {r["key"]: r for r in baseline["ratios"]}
    moved = []
    print(f"baseline {path} ({baseline['device']}, {baseline['date']})")
    print(f"{'ratio':<60} {'baseline':>9} {'now':>9} {'moved':>7} {'band':>6}")
    for ratio in rerun["ratios"]:
        if ratio["key"] not in old:
            continue
        before = old[ratio["key"]]["ratio"]
        change = abs(ratio["ratio"] / before - 1)
        band = band_for(ratio["key"], baseline, rerun)
        flag = "" if change <= band else "  MOVED"
        print(f"{ratio['what']:<60} {before:>9.3f} {ratio['ratio']:>9.3f} {change:>6.0%} {band:>6.0%}{flag}")
        if flag:
            moved.append(ratio["what"])
    if moved:
        print(f"{len(moved)} ratio(s) moved beyond their noise band")
        return 1
    print("all ratios within their noise bands")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
