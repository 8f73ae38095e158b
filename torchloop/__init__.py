"""PyTorch backend: nn.Module models, torch.optim optimizers, a textbook training loop.

The reference side: the JAX backend (flaxloop) reproduces what this computes.
"""
