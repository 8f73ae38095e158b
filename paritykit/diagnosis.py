"""The catalogue of known porting traps, each recognised by the signature it leaves in a located
update (paritykit.locate). A trap either reads its signature off the measured quantities (a
running variance whose increment is n/(n-1) of torch's), or is a hypothesis tried on the torch side
of the same probe (torch's GELU made tanh): when the hypothesis makes the two agree, that is the cause.
The facts behind each entry: docs/parity-facts.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from loopspec.config import Config, resolved_eps, resolved_weight_decay
from paritykit.locate import step_records

Signature = Callable[[Any, Config, Path, Path], Optional[str]]  # (location, config, run A, run B) -> why


@dataclass(frozen=True)
class Trap:
    name: str
    signature: Signature


def measured(location: Any, stage: str, name: Optional[str] = None) -> list[Any]:
    return [q for q in location.quantities if q.stage == stage and not q.ok and (name is None or q.name == name)]


def close(a: float, b: float, rtol: float = 1e-6) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


# ----------------------------------------------------------------------------- read off the quantities


def neighbouring_value(key: str, what: str) -> Signature:
    """B's value of `key` at the located update is A's of the update before or after it."""

    def signature(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
        if not measured(location, "hyper-parameter", key):
            return None
        a, b, n = step_records(run_a), step_records(run_b), location.update
        if n > len(a) or n > len(b) or key not in b[n - 1]:
            return None
        for shift, word in ((-1, "before"), (1, "after")):
            if 0 < n + shift <= len(a) and key in a[n + shift - 1] and close(b[n - 1][key], a[n + shift - 1][key]):
                return (
                    f"{what}: B's {key} at update {n} ({b[n - 1][key]:.6g}) is A's of the update {word} it "
                    f"({a[n + shift - 1][key]:.6g})"
                )
        return None

    return signature


def increments_ratio(values: tuple, momentum: float) -> Optional[np.ndarray]:
    """B's update of a running statistic over A's, per channel: (new - (1 - m) old) for each."""
    old, new_a, new_b = (np.asarray(v, np.float64) for v in values)
    inc_a, inc_b = new_a - (1 - momentum) * old, new_b - (1 - momentum) * old
    keep = np.abs(inc_a) > 1e-12 * np.abs(new_a).max(initial=1.0)
    return inc_b[keep] / inc_a[keep] if keep.any() else None


def batchnorm_variance(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
    for q in measured(location, "buffer"):
        if not q.name.endswith("running_var") or q.values[0] is None:
            continue
        ratio = increments_ratio(q.values, config.model.batchnorm_momentum)
        if ratio is None or np.ptp(ratio) > 1e-6 * abs(ratio.mean()):
            continue
        r = float(ratio.mean())
        for value, which in ((1 / r, "biased"), (r, "unbiased")):  # value = n/(n-1)
            if value > 1 and abs(1 / (value - 1) + 1 - round(1 / (value - 1) + 1)) < 1e-3:
                n = round(1 / (value - 1) + 1)
                return (
                    f"BatchNorm running variance: B's increment is {r:.6g} x A's = "
                    f"{'(n-1)/n' if which == 'biased' else 'n/(n-1)'} with n = {n}: "
                    + (
                        f"B keeps the biased batch variance where torch keeps the unbiased one, in {q.name}"
                        if which == "biased"
                        else f"A keeps the biased batch variance where B keeps torch's unbiased one, in {q.name}"
                    )
                )
    return None


def batchnorm_momentum(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
    m = config.model.batchnorm_momentum
    for q in measured(location, "buffer"):
        if not q.name.endswith(("running_mean", "running_var")) or q.values[0] is None:
            continue
        old, new_a, new_b = (np.asarray(v, np.float64) for v in q.values)
        moved_a, moved_b = new_a - old, new_b - old
        keep = np.abs(moved_a) > 1e-12 * np.abs(new_a).max(initial=1.0)
        if not keep.any():
            continue
        ratio = moved_b[keep] / moved_a[keep]
        if np.ptp(ratio) <= 1e-6 * abs(ratio.mean()) and close(float(ratio.mean()), (1 - m) / m, 1e-6):
            return (
                f"BatchNorm momentum: B's running statistics move {ratio.mean():.6g} x A's = (1-m)/m with m = {m}: "
                f"B weights the new batch by {1 - m:g}, not {m:g} (flax's momentum {1 - m:g} weights the old "
                f"statistics; torch's {m:g} the new) in {q.name}"
            )
    return None


def adam_eps_in_root(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
    """Slots agree, applied updates part, and B's update is what eps inside the root gives."""
    opt = config.optimizer
    if opt.name not in ("adam", "adamw") or measured(location, "optimizer slot") or not measured(location, "update"):
        return None
    lr = next((q.values[0] for q in location.quantities if q.name == "lr"), None)
    if lr is None or location.probe is None:
        return None
    before = location.probe[1]
    slots = {q.name: q.values[0] for q in location.quantities if q.stage == "optimizer slot"}
    eps, (b1, b2), t = resolved_eps(opt), opt.betas, location.update
    decay = resolved_weight_decay(opt) if opt.name == "adamw" else 0.0
    hits = 0
    for q in measured(location, "update"):
        m, v = slots.get(f"{q.name}.exp_avg"), slots.get(f"{q.name}.exp_avg_sq")
        if m is None or v is None:
            return None
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        inside = -lr * m_hat / np.sqrt(v_hat + eps) - lr * decay * before[q.name]
        if np.abs(inside - q.values[1]).max() > 1e-6 * np.abs(q.values[1]).max(initial=1e-300):
            return None
        hits += 1
    return (
        f"Adam's eps inside the square root: B's updates of {hits} tensors are lr * m / sqrt(v + eps) "
        "(optax's eps_root form) where torch computes lr * m / (sqrt(v) + eps)"
        if hits
        else None
    )


# ----------------------------------------------------------------------------- hypotheses on the torch side


def torch_variant(
    function: str, replace: Callable[[Callable], Callable], what: str, owner: Optional[Any] = None
) -> Signature:
    """A hypothesis on the torch side: `torch.nn.functional.<function>` (or `owner.<function>`)
    replaced while the probe reruns (a module such as nn.GELU calls the function too); when the
    probe then agrees where it parted, and the function ran, the hypothesis is the cause."""

    def signature(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
        first = location.first
        if location.probe is None or first is None or first.stage != "forward":
            return None
        import torch.nn.functional

        from paritykit.locate import probe_update

        F = torch.nn.functional if owner is None else owner
        original, calls = getattr(F, function), []

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return replace(original)(*args, **kwargs)

        cfg, before, rows, forward_pass, models = location.probe
        setattr(F, function, counted)
        try:
            again = probe_update(cfg, before, rows, forward_pass, models)
        finally:
            setattr(F, function, original)
        if not calls or not again or not all(q.ok for q in again):
            return None
        return f"{what} (with that change on the torch side, the update's outputs, loss and gradients agree)"

    return signature


def channels_last_flatten(flatten: Callable) -> Callable:
    """Tensor.flatten(1) of (N, C, ...) in flax's channels-last order."""

    def flat(self: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
        if self.ndim >= 3 and start_dim == 1 and end_dim == -1:
            return flatten(self.movedim(1, -1), 1)
        return flatten(self, start_dim, end_dim)

    return flat


def same_padding(conv: Callable) -> Callable:
    """F.conv1d/conv2d with flax's 'SAME' padding (the extra row at the end) where torch pads evenly."""

    def padded(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, *args: Any) -> Any:
        import torch.nn.functional as F

        dims = weight.ndim - 2
        strides = (stride,) * dims if isinstance(stride, int) else tuple(stride)
        if isinstance(padding, str) or all(s == 1 for s in strides):
            return conv(x, weight, bias, stride, padding, *args)
        pads: list[int] = []
        for axis in reversed(range(dims)):  # F.pad lists the last dimension first
            size, kernel, step = x.shape[2 + axis], weight.shape[2 + axis], strides[axis]
            total = max((-(-size // step) - 1) * step + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return conv(F.pad(x, pads), weight, bias, stride, 0, *args)

    return padded


def gelu_tanh(gelu: Callable) -> Callable:
    return lambda x, approximate="none": gelu(x, approximate="tanh")


def layer_norm_eps(hypothesis: float) -> Callable[[Callable], Callable]:
    def replace(layer_norm: Callable) -> Callable:
        return lambda x, shape, weight=None, bias=None, eps=1e-5: layer_norm(x, shape, weight, bias, hypothesis)

    return replace


def loss_variant(change: Callable[[Any], Any], what: str) -> Signature:
    """The forward pass agrees and the loss parts: a torch loss with `change(config.loss)` reproduces B's."""

    def signature(location: Any, config: Config, run_a: Path, run_b: Path) -> Optional[str]:
        first = location.first
        if location.probe is None or first is None or first.stage != "loss":
            return None
        variant = change(config.loss)
        if variant is None:
            return None
        from paritykit.locate import probe_update

        cfg, before, rows, forward_pass, models = location.probe
        again = probe_update(cfg, before, rows, forward_pass, models, torch_loss=variant)
        if not again or not all(q.ok for q in again if q.stage == "loss"):
            return None
        return what

    return signature


def smoothing_twice(loss: Any) -> Any:
    eps = loss.label_smoothing
    return dataclasses.replace(loss, label_smoothing=1 - (1 - eps) ** 2) if eps > 0 else None


def alpha_swapped(loss: Any) -> Any:
    alpha = loss.alpha
    return dataclasses.replace(loss, alpha=1 - alpha) if loss.name == "focal" and alpha not in (None, 0.5) else None


CATALOGUE: list[Trap] = [
    Trap("schedule off by one", neighbouring_value("lr", "a learning-rate schedule off by one update")),
    Trap("loss scale a step late", neighbouring_value("loss_scale", "a loss scale grown or backed off one update off")),
    Trap("momentum schedule off by one", neighbouring_value("momentum", "a cycled momentum off by one update")),
    Trap("BatchNorm biased variance", batchnorm_variance),
    Trap("BatchNorm momentum", batchnorm_momentum),
    Trap("Adam eps inside the root", adam_eps_in_root),
    Trap(
        "GELU approximation",
        torch_variant(
            "gelu", gelu_tanh, "GELU: B computes the tanh approximation (flax's default), torch the exact erf"
        ),
    ),
    Trap(
        "LayerNorm eps",
        torch_variant("layer_norm", layer_norm_eps(1e-6), "LayerNorm eps: B uses 1e-6 (flax's default), torch 1e-5"),
    ),
    Trap(
        "flatten order",
        torch_variant(
            "flatten",
            channels_last_flatten,
            "flatten order: B flattens (N, ..., C) channels last where torch flattens (N, C, ...); transpose to "
            "torch's order before the head",
            owner=__import__("torch").Tensor,
        ),
    ),
    Trap(
        "'SAME' padding (Conv1d)",
        torch_variant(
            "conv1d", same_padding, "'SAME' padding: B pads a strided convolution unevenly (flax), torch evenly"
        ),
    ),
    Trap(
        "'SAME' padding (Conv2d)",
        torch_variant(
            "conv2d", same_padding, "'SAME' padding: B pads a strided convolution unevenly (flax), torch evenly"
        ),
    ),
    Trap(
        "label smoothing applied twice",
        loss_variant(smoothing_twice, "label smoothing applied twice: B's loss is torch's at 1-(1-eps)^2"),
    ),
    Trap("focal alpha swapped", loss_variant(alpha_swapped, "focal alpha swapped: B weights positives by 1 - alpha")),
]


def diagnose(location: Any, config: Config, run_a: Path, run_b: Path) -> list[str]:
    """Every catalogue entry whose signature the location shows."""
    found = []
    for trap in CATALOGUE:
        why = trap.signature(location, config, run_a, run_b)
        if why:
            found.append(why)
    return found
