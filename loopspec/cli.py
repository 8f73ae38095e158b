"""The command line both `python -m torchloop.train` and `python -m flaxloop.train` share."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from loopspec.checkpoint import resolve_resume
from loopspec.config import DTYPES, PRECISIONS, Config, apply_override, config_from_dict, load_config
from loopspec.errors import RunInterrupted, TrainingDiverged, UserError


def command_name(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command as the user typed it: an installed script's name (parity-compare), or
    `python -m module` (also when called from Python with explicit arguments)."""
    script = Path(sys.argv[0]).name if argv is None and sys.argv and sys.argv[0] else ""
    if not script or script.endswith(".py") or script.startswith("-") or script.startswith("python"):
        return f"python -m {module}"
    return script


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and still exits with code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def exit_quietly_on_signals(prog: str) -> None:
    """Until training installs its own handlers (loopspec.loop): SIGINT or SIGTERM while the
    frameworks import or the first step compiles ends the process with one line, no traceback."""

    def leave(signum: int, frame: Any) -> None:
        print(f"{prog}: interrupted ({signal.Signals(signum).name}) before training started", file=sys.stderr)
        os._exit(128 + signum)  # nothing is written yet that needs finishing

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)


def build_parser(prog: str, backend: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=f"Train a model with the {backend} backend.")
    parser.add_argument(
        "--config",
        help="YAML, TOML or JSON config file, or a recipe's name such as digits_cnn "
        "(with --resume: the checkpoint's by default)",
    )
    parser.add_argument("--out", required=True, help="run directory for config.json, metrics.jsonl, *.safetensors")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by dotted path, e.g. --set optimizer.lr=0.01 (repeatable)",
    )
    parser.add_argument("--init", help="start from these weights (safetensors, torch state_dict names)")
    parser.add_argument(
        "--model",
        metavar="PKG.MODULE:FACTORY",
        help=f"your own {backend} model: an import string of a factory called with model.kwargs (docs/models.md)",
    )
    parser.add_argument("--dtype", choices=list(DTYPES), help="float32 or float64: shorthand for --precision fp32|fp64")
    parser.add_argument("--precision", choices=PRECISIONS, help="shorthand for --set train.precision=...")
    parser.add_argument(
        "--resume",
        metavar="DIR|auto",
        help="continue from a checkpoint: its directory, a run directory (its newest checkpoint), "
        "or auto (--out's newest checkpoint if it has one, else start)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress output (train.verbose: 0)")
    return parser


def resolve_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    """--config with overrides; with --resume and no --config, the checkpoint's own config."""
    if args.config is not None:
        return load_config(args.config, overrides)
    quiet = lambda message: None  # noqa: E731  (training reports skipped checkpoints once, when it resumes)
    checkpoint = resolve_resume(args.resume, Path(args.out), warn=quiet) if args.resume else None
    if checkpoint is None:
        raise UserError("--config is required (or --resume with a checkpoint, whose config is used)")
    raw = checkpoint.state["config"]
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw)


def run_cli(prog: str, backend: str, fit: Callable[..., Any], argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, load the config and train; user errors become one stderr line and exit 2."""
    parser = build_parser(prog, backend)
    args = parser.parse_args(argv)
    if not args.out.strip():
        parser.error("--out must name a run directory, got an empty string")
    try:
        precision = args.precision or DTYPES.get(args.dtype)
        overrides = list(args.set) + ([f"train.precision={precision}"] if precision else [])
        overrides += ["train.verbose=0"] if args.quiet else []
        if args.model is not None:
            overrides += ["model.name=custom", f"model.{'torch' if backend == 'torch' else 'flax'}={args.model}"]
        config = resolve_config(args, overrides)
        fit(config, args.out, init=args.init, resume=args.resume, overwrite=args.overwrite)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment: permissions, a full disk, a file where a directory belongs
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"{prog}: error: {where}{err.strerror or err}; check the path and its permissions or free space",
            file=sys.stderr,
        )
        return 2
    except TrainingDiverged as err:
        print(f"{prog}: training stopped: {err}", file=sys.stderr)
        return 3
    except RunInterrupted as stop:
        print(f"{prog}: interrupted: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def backend_main(backend: str, prog: str) -> int:
    """A console script: quiet signals first, then the backend's (heavy) import, then the CLI."""
    exit_quietly_on_signals(prog)
    try:
        from loopspec.backends import backend_module

        train = backend_module(backend, "train")
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return run_cli(prog, backend, train.fit)


def torch_main() -> int:
    """`torchloop-train`: python -m torchloop.train as an installed command (a torchrun rank leaves as
    torchloop.parallel.leave_replica_process says)."""
    code = backend_main("torch", "torchloop-train")
    parallel = sys.modules.get("torchloop.parallel")  # absent when the backend could not be imported
    return parallel.leave_replica_process(code) if parallel is not None else code


def jax_main() -> int:
    """`flaxloop-train`: python -m flaxloop.train as an installed command."""
    return backend_main("jax", "flaxloop-train")
