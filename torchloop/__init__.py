"""PyTorch backend: nn.Module models, torch.optim optimizers, a textbook training loop.

The reference side: the JAX backend (flaxloop) reproduces what this computes.

    import torchloop
    run = torchloop.fit({"data": {"name": "intrusion"}, "train": {"epochs": 3}}, "runs/torchloop")
    run.summary, run.history, run.model  # the model: an eval-mode nn.Module

`fit`, `load_model` and `predict` are imported on first use, so `python -m torchloop.train` runs that
module once. The backend-neutral forms: loopspec.fit(..., backend="torch"), loopspec.load_run.
"""

from loopspec.backends import lazy_exports, refuse_a_command_without

refuse_a_command_without(("torch",), "torch")

__getattr__, __all__ = lazy_exports(__name__, {"fit": "train", "load_model": "inference", "predict": "inference"})
