"""The parity tools users run, on top of both backends (install with the [all] extra).

run.py              the main job: the default config on both backends, float64 and float32 (`parity-run`)
plots.py            schedules of both backends overlaid, and runs' loss and lr (`parity-plots`)
harness.py          one config through both backends in this process
sensitivity.py      the float32 verdict: the run's own self-divergence envelope
statistics.py       accuracy over seeds (Welch's t-test, family-wise error)
schedule_values.py  lr and momentum as each backend's schedule produces them
pairs.py            the pair check of a user's torch / flax model pair (`check_models`)
compare.py          parity-compare: loopspec.comparison with the float32 verdict
locate.py           where two runs part, replayed from the same state (`parity-locate`, `locate`)
diagnosis.py        the catalogue of porting traps the locator recognises by their signatures
samples.py          text from trained character models, per backend (`parity-samples`)
"""

from loopspec.backends import lazy_exports

# Imported on first use: `python -m paritykit.run` does not load both frameworks before it needs them.
__getattr__, __all__ = lazy_exports(__name__, {"check_models": "pairs", "locate": "locate"})
