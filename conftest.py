"""Test-session settings, applied before torch or jax is imported.

One compute thread per framework per test worker: pytest -n 2 runs two workers on two
cores, and the frameworks' own thread pools (OpenMP in torch, Eigen in XLA) fighting over
them made one parity test 30x slower (213 s instead of 8 s, measured). PARITY_PROFILE
selects a simulated machine (parity_tests/profiles.py) for the float32 verdicts.
"""

import os
from pathlib import Path

from parity_tests import profiles

_name, _profile = profiles.current()
profiles.apply_environment(_profile)
# JAX's persistent compilation cache: the suite compiles the same programs for many runs that
# differ only in values (seeds, perturbed weights); from the cache a small run starts in 0.7 s
# instead of 2.5 s (measured). Its keys include XLA_FLAGS, so profiles do not share entries.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
profiles.apply_torch(_profile)


def _two_host_devices() -> None:
    """Two host devices in each test process, so JAX's data-parallel runs need no subprocess (which
    would import JAX and compile again); a single-device run is the same program on device 0 (its
    records and weights checked bit for bit). Set in JAX's config, not the environment, so the
    subprocesses that tests start see one device, as a user's process does."""
    import jax

    jax.config.update("jax_num_cpu_devices", 2)


_two_host_devices()
