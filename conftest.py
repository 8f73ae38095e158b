"""Test-session settings, applied before torch or jax is imported.

One compute thread per framework per test worker: pytest -n 2 runs two workers on two
cores, and the frameworks' own thread pools (OpenMP in torch, Eigen in XLA) fighting over
them made one parity test 30x slower (213 s instead of 8 s, measured). PARITY_PROFILE
selects a simulated machine (parity_tests/profiles.py) for the float32 verdicts.
"""

from parity_tests import profiles

_name, _profile = profiles.current()
profiles.apply_environment(_profile)
profiles.apply_torch(_profile)
