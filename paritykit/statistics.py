"""Accuracy verdicts as statistics over seeds, not single draws.

A run's final accuracy is one draw from a distribution that the seed (initial weights,
dropout, batch order) spreads out. Comparing one seed-0 run against another says little: on
a different machine both land elsewhere in their distributions. Here each side is a sample
of SEEDS runs and the verdict is Welch's t-test (unequal variances, scipy.stats.ttest_ind) at
a stated confidence: one-sided where doing better is not a failure (mixed precision against
fp32), two-sided where neither side may drift (one backend against the other).

CONFIDENCE is family-wise: a test that makes k comparisons judges each at
1 - (1 - CONFIDENCE) / k (Bonferroni), so a correct implementation fails the whole test with
probability below 1 - CONFIDENCE on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.99
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Comparison:
    what: str
    sample: tuple[float, ...]
    reference: tuple[float, ...]
    alternative: Literal["less", "two-sided"]
    p_value: float
    alpha: float

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha

    def render(self) -> str:
        mean, ref = np.mean(self.sample), np.mean(self.reference)
        claim = "lower" if self.alternative == "less" else "different"
        verdict = "ok" if self.passed else f"FAIL: significantly {claim}"
        return (
            f"{self.what}: mean {mean:.4f} (sd {np.std(self.sample, ddof=1):.4f}) vs {ref:.4f} "
            f"(sd {np.std(self.reference, ddof=1):.4f}), n={len(self.sample)}/{len(self.reference)}, "
            f"p={self.p_value:.3g} against alpha {self.alpha:.2g}: {verdict}"
        )


def compare(
    what: str,
    sample: Sequence[float],
    reference: Sequence[float],
    alternative: Literal["less", "two-sided"],
    comparisons: int = 1,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Welch's t-test of `sample` against `reference`; alpha is Bonferroni-corrected for `comparisons`."""
    a, b = np.asarray(sample, float), np.asarray(reference, float)
    if np.var(a) == 0 and np.var(b) == 0:  # no spread: the means decide exactly
        differs = a.mean() < b.mean() if alternative == "less" else a.mean() != b.mean()
        p_value = 0.0 if differs else 1.0
    else:
        p_value = float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)
    return Comparison(what, tuple(a), tuple(b), alternative, p_value, (1 - confidence) / comparisons)
