"""The command line both `python -m torchloop.train` and `python -m flaxloop.train` share."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

from loopspec.config import DTYPES, PRECISIONS, Config, load_config
from loopspec.errors import TrainingDiverged, UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and still exits with code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str, backend: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=f"Train a model with the {backend} backend.")
    parser.add_argument("--config", required=True, help="YAML, TOML or JSON config file")
    parser.add_argument("--out", required=True, help="run directory for config.json, metrics.jsonl, *.safetensors")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by dotted path, e.g. --set optimizer.lr=0.01 (repeatable)",
    )
    parser.add_argument("--init", help="start from these weights (safetensors, torch state_dict names)")
    parser.add_argument("--dtype", choices=list(DTYPES), help="float32 or float64: shorthand for --precision fp32|fp64")
    parser.add_argument("--precision", choices=PRECISIONS, help="shorthand for --set train.precision=...")
    return parser


def run_cli(prog: str, backend: str, fit: Callable[..., Any], argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, load the config and train; user errors become one stderr line and exit 2."""
    parser = build_parser(prog, backend)
    args = parser.parse_args(argv)
    if not args.out.strip():
        parser.error("--out must name a run directory, got an empty string")
    try:
        precision = args.precision or DTYPES.get(args.dtype)
        overrides = list(args.set) + ([f"train.precision={precision}"] if precision else [])
        config: Config = load_config(args.config, overrides)
        fit(config, args.out, init_path=args.init)
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
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
