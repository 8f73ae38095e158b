"""JAX backend: Flax models, Optax optimizers, a pure jitted train step over a TrainState.

Reproduces torchloop's computation: torch's BatchNorm statistics, torch's optimizer
updates, torch's loss reductions.
"""
