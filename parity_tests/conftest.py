"""Fixtures shared by the parity tests."""

from __future__ import annotations

import numpy as np
import pytest

import loopspec.run
from loopspec.data import load_dataset


@pytest.fixture
def nan_in_training_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """One training sample becomes NaN, so one update per epoch meets a NaN batch."""

    def load_with_nan(cfg):
        dataset = load_dataset(cfg)
        dataset.x_train = dataset.x_train.copy()
        dataset.x_train[123, 0] = np.nan
        return dataset

    monkeypatch.setattr(loopspec.run, "load_dataset", load_with_nan)
