"""Parity building blocks for a user's torch module: dropout that takes the masks both backends share.

`ParityDropout(p)` is `nn.Dropout(p)` in every way, except that while the training loop has given
it a mask (parity mode: one counter-based generator keyed by seed, layer and forward pass,
loopspec.dropout) it multiplies by that mask instead of drawing one, so a JAX port with
`flaxloop.layers.ParityDropout` at the same place drops the same units. Its mask is set for one
forward pass by `parity_masks`; layers are keyed by the order they run in.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn


class ParityDropout(nn.Dropout):
    """nn.Dropout that applies the loop's mask (parity mode) when it has one, else draws its own."""

    mask: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None or not self.training:
            return super().forward(x)
        return x * self.mask


@contextlib.contextmanager
def parity_masks(layers: Sequence[ParityDropout], masks: Optional[Sequence[Optional[torch.Tensor]]]) -> Iterator[None]:
    """Give each parity dropout layer (in the order they run) its mask for one forward pass (None: the
    layer's own dropout, the identity at rate 0)."""
    if masks is None:
        yield
        return
    for layer, mask in zip(layers, masks):
        layer.mask = mask
    try:
        yield
    finally:
        for layer in layers:
            layer.mask = None


def dropout_layers(module: nn.Module, sample: torch.Tensor) -> list[tuple[str, tuple[int, ...], float, ParityDropout]]:
    """The module's ParityDropout layers in the order one forward pass runs them: (state_dict-style name,
    the shape of one sample's input to it, its rate, the layer). Found with forward hooks on a probe
    batch in eval mode, so no statistic moves."""
    names = {id(layer): name for name, layer in module.named_modules() if isinstance(layer, ParityDropout)}
    if not names:
        return []
    found: list[tuple[str, tuple[int, ...], float, ParityDropout]] = []

    def record(layer: ParityDropout, inputs: tuple) -> None:
        found.append((names[id(layer)], tuple(inputs[0].shape[1:]), float(layer.p), layer))

    handles = [
        layer.register_forward_pre_hook(record) for layer in module.modules() if isinstance(layer, ParityDropout)
    ]
    training = module.training
    try:
        with torch.no_grad():
            module.eval()(sample)
    finally:
        module.train(training)
        for handle in handles:
            handle.remove()
    return found
