"""Step times of the library's train steps in fp32, bf16 and fp16, both backends, one device.

    python -m benchmarks.precision_times [--device cpu|cuda] [--steps 30] [--repeats 5] [--out DIR]

Times each backend's own train step (torchloop.train.train_step, flaxloop.train.train_step
jitted) on one batch already on the device, after warm-up, with device synchronisation
(torch.cuda.synchronize / block_until_ready). Prints a table and writes it, with the device
and date, as Markdown and JSON under --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import statistics
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import torch

import flaxloop.train as flax_train
import torchloop.train as torch_train
from benchmarks.timing import Timed, microseconds_per_step
from flaxloop.losses import make_loss as make_flax_loss
from flaxloop.precision import param_dtype as flax_param
from flaxloop.precision import precision_scope
from loopspec.config import config_from_dict
from loopspec.run import plan_run
from torchloop.losses import make_loss as make_torch_loss
from torchloop.models import build_model
from torchloop.optim import make_optimizer
from torchloop.precision import compute_dtype, make_grad_scaler, param_dtype, resolve_device, set_matmul_precision

MODELS = {
    "mlp": {
        "data": {"name": "intrusion", "num_samples": 4096, "batch_size": 256},
        "model": {"name": "mlp", "hidden": [256, 128], "dropout": 0.0},
        "loss": {"name": "focal"},
    },
    "fashion_mlp": {
        "data": {"name": "synthetic_images", "num_samples": 2048, "channels": 1, "image_size": 28, "batch_size": 256},
        "model": {"name": "fashion_mlp"},
        "loss": {"name": "cross_entropy"},
    },
    "cnn": {
        "data": {"name": "synthetic_images", "num_samples": 2048, "channels": 3, "image_size": 32, "batch_size": 128},
        "model": {"name": "cnn", "channels": [32, 64, 128]},
        "loss": {"name": "cross_entropy"},
    },
}
PRECISIONS = ("fp32", "bf16", "fp16")
SCRATCH = Path("runs/benchmarks")  # the run directory each step's setup names, never written


def timed(step: Callable[[], None], sync: Callable[[], None], steps: int, repeats: int) -> list[float]:
    """Microseconds per step for each repeat of `steps` steps."""
    run = Timed(lambda i: step(), sync, steps, 1, 0.0)
    return [microseconds_per_step(run) for _ in range(repeats)]


def torch_times(raw: dict, device_name: str, steps: int, repeats: int) -> list[float]:
    config = config_from_dict(raw)
    # planned, not claimed: nothing is written, so runs side by side do not contend for a run directory
    setup = plan_run(config, SCRATCH, None, backend="torch")
    device, precision = resolve_device(device_name), config.train.precision
    set_matmul_precision(config.train.tf32)
    model = build_model(config.model, setup.dataset.input_shape, setup.out_dim).to(
        device=device, dtype=param_dtype(precision)
    )
    loss_fn = make_torch_loss(config.loss, setup.dataset.num_classes, setup.out_dim).to(
        device=device, dtype=param_dtype(precision)
    )
    optimizer = make_optimizer(config.optimizer, model.parameters())
    scaler = make_grad_scaler(precision, config.train.loss_scale, device)
    rows = np.arange(config.data.batch_size)
    micro = [
        (
            torch.as_tensor(setup.dataset.x_train[rows], dtype=param_dtype(precision), device=device),
            torch.as_tensor(setup.dataset.y_train[rows], device=device),
            None,
            1.0,  # one device: the whole batch's loss
        )
    ]
    model.train()

    def step() -> None:
        torch_train.train_step(model, loss_fn, optimizer, scaler, micro, compute_dtype(precision))

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timed(step, sync, 3, 1)  # warm-up
    return timed(step, sync, steps, repeats)


def jax_times(raw: dict, device_name: str, steps: int, repeats: int) -> list[float]:
    config = config_from_dict(raw)
    with precision_scope(config.train.precision, device_name, config.train.tf32):
        setup = plan_run(config, SCRATCH, None, backend="jax")
        dtype = flax_param(config.train.precision)
        state = flax_train.JaxBackend(setup).state
        loss_fn = make_flax_loss(config.loss, setup.dataset.num_classes, setup.out_dim)
        step_fn = jax.jit(functools.partial(flax_train.train_step, loss_fn=loss_fn))
        rows = np.arange(config.data.batch_size)
        window = jax.device_put(
            {"tail": {"x": setup.dataset.x_train[rows].astype(dtype), "y": setup.dataset.y_train[rows]}}
        )
        box = {"state": state}

        def step() -> None:
            box["state"], metrics = step_fn(box["state"], window)

        def sync() -> None:
            jax.block_until_ready(box["state"])

        timed(step, sync, 3, 1)  # warm-up and compile
        return timed(step, sync, steps, repeats)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_times", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    device_label = (
        torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        for precision in PRECISIONS:
            raw = {**MODELS[model], "train": {"precision": precision, "device": args.device, "log_every": 0}}
            for backend, measure in (("torch", torch_times), ("jax", jax_times)):
                samples = measure(raw, args.device, args.steps, args.repeats)
                rows.append(
                    {
                        "model": model,
                        "precision": precision,
                        "backend": backend,
                        "batch_size": raw["data"]["batch_size"],
                        "us_per_step_median": statistics.median(samples),
                        "us_per_step_min": min(samples),
                        "us_per_step_max": max(samples),
                    }
                )
                print(
                    f"{model:12s} {precision:5s} {backend:6s} {statistics.median(samples):10.0f} us/step "
                    f"(min {min(samples):.0f}, max {max(samples):.0f})",
                    flush=True,
                )
    date = datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"precision_step_times_{args.device}_{date}"
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "device": device_label,
                "date": date,
                "steps": args.steps,
                "repeats": args.repeats,
                "torch": torch.__version__,
                "jax": jax.__version__,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        f"# Train-step times by precision: {device_label}, {date}",
        "",
        f"torch {torch.__version__}, jax {jax.__version__}; median of {args.repeats} repeats of {args.steps} steps "
        "(min..max), microseconds per step, the library's train step on one device-resident batch.",
        "",
        "| model | batch | precision | torch | jax |",
        "|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        for precision in PRECISIONS:
            cell = {r["backend"]: r for r in rows if r["model"] == model and r["precision"] == precision}
            fmt = lambda r: f"{r['us_per_step_median']:.0f} ({r['us_per_step_min']:.0f}..{r['us_per_step_max']:.0f})"  # noqa: E731
            lines.append(
                f"| {model} | {cell['torch']['batch_size']} | {precision} | {fmt(cell['torch'])} | {fmt(cell['jax'])} |"
            )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
