"""`parity-compare RUN_A RUN_B` (also `python -m paritykit.compare`): loopspec.comparison's report, with
float32 runs judged by the envelope measured on this machine (paritykit.harness.recorded_verdict).

Float64 runs are judged at 1e-10, runs of different configs are listed key by key first, and fp32
runs of one config started from the same weights get the float32 verdict, or one line saying why
they cannot be judged so (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from loopspec import comparison
from loopspec.errors import UserError


def float32_verdict(run_a: Path, run_b: Path) -> tuple[Optional[bool], str]:
    """Two float32 runs judged by the envelope measured now (paritykit.harness), or why they cannot be."""
    from paritykit.harness import recorded_verdict  # both frameworks: imported only when a verdict is due

    try:
        verdict = recorded_verdict(run_a, run_b)
    except UserError as err:
        return None, f"no float32 verdict: {err}"
    return verdict.agree, verdict.render()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return comparison.main(argv, float32_verdict, module="paritykit.compare")


if __name__ == "__main__":
    raise SystemExit(main())
