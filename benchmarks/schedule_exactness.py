"""How exact, and how costly, each way of giving a float32 JAX run torch's learning rate is.

    python -m benchmarks.schedule_exactness [--updates 3000] [--out DIR]

torch computes a schedule in Python doubles (recurrences included) and the optimizer receives the
value rounded once. Three ways to do that on the JAX side, each measured here:

- formula-f32: the closed form evaluated in float32 inside the jitted step (flaxloop before the
  tables; optax's own schedules do the same);
- formula-f64: the closed form in float64 inside the step (x64 on), rounded to float32 at the end;
- table: torch's doubles computed on the host (loopspec.schedules.torch_schedule_values), rounded
  once to float32 and looked up by optax's update count (flaxloop.schedules, what runs now).

Printed per schedule: the worst distance from torch's double in float32 ulps (0.5 is one correct
rounding), and the time of one jitted AdamW update on a 1M-parameter vector with each variant
beside a constant rate, with the table's size and compile time for long runs. Writes the table
as Markdown and JSON under --out (default benchmarks/results) with the date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxloop.schedules import lookup
from loopspec.config import ScheduleConfig
from loopspec.schedules import onecycle_phase_ends, torch_schedule_values
from paritykit.sensitivity import ulps_apart

BASE_LR = 1e-3
SCHEDULES = {
    "onecycle, three phases": {"name": "onecycle", "three_phase": True, "max_lr": 0.01},
    "onecycle, linear": {"name": "onecycle", "anneal_strategy": "linear", "max_lr": 0.01, "pct_start": 0.25},
    "cosine past T_max": {"name": "cosine", "eta_min": 1e-5},  # T_max: a third of the run
    "warm-up cosine": {"name": "warmup_cosine", "warmup": 100, "eta_min": 1e-6},
    "exponential": {"name": "exponential", "gamma": 0.999},
}


def closed_form(cfg: ScheduleConfig, horizon: int) -> Callable[[Any], Any]:
    """The schedule's textbook closed form in jnp, in whatever float dtype `t` has."""
    if cfg.name == "cosine":
        return lambda t: cfg.eta_min + (BASE_LR - cfg.eta_min) * (1 + jnp.cos(jnp.pi * t / horizon)) / 2
    if cfg.name == "exponential":
        return lambda t: BASE_LR * cfg.gamma**t
    if cfg.name == "warmup_cosine":
        return lambda t: optax.warmup_cosine_decay_schedule(0.0, BASE_LR, cfg.warmup, horizon, cfg.eta_min)(t)
    max_lr = cfg.max_lr
    values = {"initial": max_lr / cfg.div_factor, "max": max_lr}
    values["min"] = values["initial"] / cfg.final_div_factor
    path = [("initial", "max"), ("max", "initial"), ("initial", "min")] if cfg.three_phase else [("initial", "max")]
    path = path if cfg.three_phase else path + [("max", "min")]
    ends = onecycle_phase_ends(cfg.pct_start, cfg.three_phase, horizon)
    starts = [0.0] + ends[:-1]

    def anneal(a: float, b: float, pct: Any) -> Any:
        if cfg.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
        return (b - a) * pct + a

    def value(t: Any) -> Any:
        phases = [anneal(values[a], values[b], (t - s) / (e - s)) for (a, b), s, e in zip(path, starts, ends)]
        result = phases[-1]
        for end, phase in reversed(list(zip(ends[:-1], phases[:-1]))):
            result = jnp.where(t <= end, phase, result)
        return result

    return value


def variant_values(name: str, cfg: ScheduleConfig, horizon: int, updates: int) -> np.ndarray:
    counts = np.arange(updates)
    if name == "table":
        lrs, _ = torch_schedule_values(cfg, horizon, BASE_LR, updates + 1)
        return np.asarray(jax.jit(lookup(np.asarray(lrs, np.float64).astype(np.float32)))(counts), np.float64)
    if name == "formula-f64":
        with jax.enable_x64(True):
            out = jax.jit(closed_form(cfg, horizon))(jnp.asarray(counts, jnp.float64))
            return np.asarray(np.asarray(out).astype(np.float32), np.float64)
    return np.asarray(jax.jit(closed_form(cfg, horizon))(jnp.asarray(counts, jnp.float32)), np.float64)


VARIANTS = ("formula-f32", "formula-f64", "table")


def exactness(updates: int) -> list[dict[str, Any]]:
    rows = []
    for label, options in SCHEDULES.items():
        cfg = ScheduleConfig(**options)
        horizon = updates // 3 if cfg.name == "cosine" else updates
        torch_lrs = np.asarray(torch_schedule_values(cfg, horizon, BASE_LR, updates)[0])
        row: dict[str, Any] = {"schedule": label}
        for variant in VARIANTS:
            ulps = ulps_apart(variant_values(variant, cfg, horizon, updates), torch_lrs)
            row[variant] = float(ulps.max())
        rows.append(row)
    return rows


class Updater:
    """A jitted AdamW update of `size` float32 parameters with its rate from `schedule` (None: constant)."""

    def __init__(self, schedule: Optional[Callable[[Any], Any]], size: int = 1_000_000):
        tx = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule if schedule is not None else BASE_LR)
        self.params, self.grads = jnp.zeros(size, jnp.float32), jnp.full(size, 1e-3, jnp.float32)
        self.update, self.state = jax.jit(tx.update), tx.init(self.params)
        self.time(5)

    def time(self, repeats: int) -> float:
        """Microseconds per update over `repeats` updates."""
        start = time.perf_counter()
        for _ in range(repeats):
            out, self.state = self.update(self.grads, self.state, self.params)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / repeats * 1e6


def update_times(schedules: dict[str, Optional[Callable[[Any], Any]]], rounds: int = 7) -> dict[str, str]:
    """Median and spread of each variant's update time, the variants interleaved round by round."""
    updaters = {name: Updater(schedule) for name, schedule in schedules.items()}
    samples: dict[str, list[float]] = {name: [] for name in schedules}
    for _ in range(rounds):
        for name, updater in updaters.items():
            samples[name].append(updater.time(50))
    return {
        name: f"{np.median(times):.0f} (min {min(times):.0f}, max {max(times):.0f})" for name, times in samples.items()
    }


def costs(updates: int) -> dict[str, Any]:
    cfg = ScheduleConfig(**SCHEDULES["onecycle, three phases"])
    table = np.asarray(torch_schedule_values(cfg, updates, BASE_LR, updates + 1)[0], np.float64).astype(np.float32)
    f32 = closed_form(cfg, updates)
    result: dict[str, Any] = update_times(
        {"constant": None, "formula-f32": lambda count: f32(jnp.asarray(count, jnp.float32)), "table": lookup(table)}
    )
    for length in (10_000, 1_000_000):
        start = time.perf_counter()
        long = np.asarray(torch_schedule_values(cfg, length, BASE_LR, length + 1)[0], np.float64).astype(np.float32)
        host = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(jax.jit(lookup(long))(jnp.asarray(length // 2)))
        result[f"table of {length:,} updates"] = {
            "bytes": int(long.nbytes),
            "host seconds": round(host, 3),
            "compile seconds": round(time.perf_counter() - start, 3),
        }
    return result


def render(rows: list[dict[str, Any]], cost: dict[str, Any], updates: int) -> str:
    lines = [
        f"Worst distance from torch's lr over {updates} updates, in float32 ulps (0.5 = torch's value rounded once):",
        "",
        "| schedule | " + " | ".join(VARIANTS) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    lines += ["| " + row["schedule"] + " | " + " | ".join(f"{row[v]:.3g}" for v in VARIANTS) + " |" for row in rows]
    lines += [
        "",
        "One jitted AdamW update of 1M float32 parameters (microseconds, median of 7 interleaved rounds):",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in cost.items() if not isinstance(value, dict)]
    lines += [f"- {name}: {value}" for name, value in cost.items() if isinstance(value, dict)]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.schedule_exactness", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    rows, cost = exactness(args.updates), costs(args.updates)
    text = render(rows, cost, args.updates)
    print(text)
    stamp = datetime.date.today().isoformat()
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"# Schedule exactness, {stamp}, {machine}, jax {jax.__version__}, CPU\n\n"
    (out / f"schedule_exactness-{stamp}.md").write_text(header + text + "\n")
    record = {"date": stamp, "machine": machine, "updates": args.updates, "exactness": rows, "cost": cost}
    (out / f"schedule_exactness-{stamp}.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0 if all(row["table"] <= 0.5 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
