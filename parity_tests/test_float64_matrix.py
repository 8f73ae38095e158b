"""Acceptance: every model x optimizer x loss combination agrees to 1e-10 in float64.

Over 300 optimizer steps: per-step loss, lr and grad_norm, per-epoch validation metrics,
and the initial and final weights and BatchNorm buffers (compare.py says how).
"""

from __future__ import annotations

import pytest

from parity_tests.matrix import MODELS, OPTIMIZERS, STEPS, combinations, losses_for, parity_config
from parity_tests.selection import cases, diagonal
from paritykit.harness import run_both

RTOL = 1e-10


# The Fashion MLP (14x14 inputs here) costs twice the others per run: make test trains it once.
ONCE = {"fashion_mlp": ("sgd", "weighted_cross_entropy")}


def covering() -> set[tuple[str, str, str]]:
    """make test's share: every optimizer and every loss with each of the MLP and the CNN, and the
    Fashion MLP once (its optimizers and losses are the CNN's; make test-full runs all)."""
    chosen = set()
    for shift, model in enumerate(MODELS):
        if model in ONCE:
            chosen.add((model, *ONCE[model]))
            continue
        for optimizer, loss in diagonal(list(OPTIMIZERS), list(losses_for(model)), shift):
            chosen.add((model, optimizer, loss))
    return chosen


COVERING = covering()


@pytest.mark.parametrize("model,optimizer,loss", cases(combinations(), lambda combo: combo in COVERING, ids="-".join))
def test_float64_runs_agree(model: str, optimizer: str, loss: str, tmp_path) -> None:
    report = run_both(parity_config(model, optimizer, loss), tmp_path, RTOL)
    print(report.render())
    step_loss = next(row for row in report.rows if row.quantity == "step loss")
    epochs = next(row for row in report.rows if row.quantity == "epoch val_loss")
    assert step_loss.compared >= STEPS
    assert epochs.compared >= 2
    assert report.agree, "\n" + report.render()
