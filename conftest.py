"""Test-session settings, applied before torch or jax is imported.

One compute thread per framework per test worker: pytest -n 2 runs two workers on two
cores, and the frameworks' own thread pools (OpenMP in torch, Eigen in XLA) fighting over
them made one parity test 30x slower (213 s instead of 8 s, measured).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import torch  # noqa: E402

torch.set_num_threads(1)
