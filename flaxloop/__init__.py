"""JAX backend: Flax models, Optax optimizers, a pure jitted train step over a TrainState.

Reproduces torchloop's computation: torch's BatchNorm statistics, torch's optimizer
updates, torch's loss reductions.

    import flaxloop
    run = flaxloop.fit({"data": {"name": "intrusion"}, "train": {"epochs": 3}}, "runs/flaxloop")
    run.summary, run.history, run.model  # the model: a TrainedModel (flax module + variables)

`fit`, `load_model` and `predict` are imported on first use, so `python -m flaxloop.train` runs that
module once. The backend-neutral forms: loopspec.fit(..., backend="jax"), loopspec.load_run.
"""

from loopspec.backends import lazy_exports, refuse_a_command_without

refuse_a_command_without(("jax", "jaxlib", "flax", "optax"), "jax")

__getattr__, __all__ = lazy_exports(__name__, {"fit": "train", "load_model": "inference", "predict": "inference"})
