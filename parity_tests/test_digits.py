"""Acceptance: each backend reaches at least 97% validation accuracy on digits with the CNN."""

from __future__ import annotations

import pytest

from parity_tests.selection import cases
from paritykit.harness import recipe, run_backends, summary


@pytest.mark.parametrize("backend", cases(["torch", "jax"], lambda backend: backend == "jax"))
def test_cnn_reaches_97_percent_on_digits(backend: str, tmp_path) -> None:
    run = run_backends(recipe("configs/digits_cnn.yaml"), tmp_path, backends=(backend,))[backend]
    accuracy = summary(run)["val_acc"]
    print(f"{backend} digits val_acc {accuracy:.4f}")
    assert accuracy >= 0.97
