"""Command line for the torch backend (`python -m torchloop.train` runs this)."""

from __future__ import annotations

from typing import Optional, Sequence

from loopspec.cli import run_cli
from torchloop.train import fit


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli("python -m torchloop.train", "torch", fit, argv)


if __name__ == "__main__":
    raise SystemExit(main())
