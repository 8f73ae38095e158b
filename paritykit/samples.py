"""Text from trained character models, one block per run, in Markdown (what docs/gpt.md shows).

    python -m paritykit.samples RUN_DIR [RUN_DIR ...] [--prompt TEXT] [--tokens N]

Each run continues the prompt with the model of the backend that trained it: greedily, then one
seeded draw at temperature 0.8. Two runs of one config on the two backends print the same greedy
text in float64, and in float32 the same until rounding tips one argmax.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopspec import UserError, load_run

PROMPT = "The two loops "


def sample_markdown(run_dir: str | Path, prompt: str = PROMPT, tokens: int = 200, seed: int = 0) -> str:
    """One run's greedy continuation and a seeded draw (temperature 0.8), as a Markdown section."""
    run = load_run(run_dir)
    greedy = run.generate(prompt, tokens)
    drawn = run.generate(prompt, tokens, temperature=0.8, seed=seed)
    summary = run.summary
    head = (
        f"**{run.backend}** (`{'/'.join(Path(run_dir).parts[-2:])}`: {summary['steps']} updates, "
        f"val_loss {summary['val_loss']:.4f}, next-character accuracy {summary['val_acc']:.3f})"
    )
    return "\n".join(
        [head, "", "greedy:", "", "```text", greedy, "```", "", "temperature 0.8, seed 0:", "", "```text", drawn, "```"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paritykit.samples", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories of a model over characters (data.name: text)")
    parser.add_argument("--prompt", default=PROMPT, help=f"the text to continue (default {PROMPT!r})")
    parser.add_argument("--tokens", type=int, default=200, help="characters to generate (default 200)")
    args = parser.parse_args(argv)
    try:
        if args.tokens < 1:
            raise UserError(f"--tokens is {args.tokens}; give a positive number of characters")
        print("\n\n".join(sample_markdown(run, args.prompt, args.tokens) for run in args.runs))
    except UserError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
