"""Command line for the JAX backend (`python -m flaxloop.train` runs this)."""

from __future__ import annotations

from typing import Optional, Sequence

from flaxloop.train import fit
from loopspec.cli import run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli("python -m flaxloop.train", "jax", fit, argv)


if __name__ == "__main__":
    raise SystemExit(main())
