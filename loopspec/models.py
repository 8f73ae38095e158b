"""The model seam, framework-neutral: every model is a registered pair of builders, one per backend.

The built-in models (mlp, fashion_mlp, cnn) are registrations like a user's pair: an entry names
each backend's builder by import string, what input the model takes, how many activations a
sample keeps (the memory estimate) and whether a batch of one sample breaks it (BatchNorm over
(N, F)). A user's pair (`model.name: custom`) is an entry built from the config's `torch` and
`flax` import strings, or from module objects passed to `loopspec.fit(model=...)`. Tensor names
and shapes come from the model itself (each backend reads them from its module), never from a table.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np

from loopspec.config import ModelConfig
from loopspec.errors import UserError

BINARY_LOGIT_LOSSES = ("bce", "focal")
InputCheck = Callable[[ModelConfig, tuple[int, ...]], None]
Activations = Callable[[ModelConfig, tuple[int, ...]], int]
Init = Callable[[ModelConfig, dict[str, tuple[int, ...]], int], dict[str, np.ndarray]]


def output_dim(loss_name: str, num_classes: int) -> int:
    """One logit for binary BCE/focal; one per class otherwise."""
    return 1 if loss_name in BINARY_LOGIT_LOSSES and num_classes == 2 else num_classes


@dataclass(frozen=True)
class ModelEntry:
    """One model pair: each backend's builder as `pkg.module:function`, called (config, input_shape,
    out_dim, ...) for a built-in, or a user factory called with the config's kwargs."""

    name: str
    torch: Optional[str]
    flax: Optional[str]
    check_input: Optional[InputCheck] = None
    activations: Optional[Activations] = None  # values a training sample keeps for the backward pass
    single_row_batchnorm: bool = True  # a BatchNorm over (N, F) rows: a batch (or shard) of one breaks it
    builtin: bool = False
    init: Optional[Init] = None  # the model's own initial weights (model.init canonical); None: torch's defaults
    token_inputs: bool = False  # integer token ids below the number of classes (the vocabulary)


REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    REGISTRY[entry.name] = entry


def model_entry(cfg: ModelConfig) -> ModelEntry:
    """The registered entry of a built-in model, or the custom pair the config names."""
    if cfg.name != "custom":
        return REGISTRY[cfg.name]
    return ModelEntry("custom", cfg.torch, cfg.flax)


def import_object(spec: str, what: str) -> Any:
    """`pkg.module:attribute` imported; a failure is one line naming the string and the cause."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"{what} {spec!r} must be an import string 'pkg.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any failure of a user's module is reported, not raised
        raise UserError(f"{what} {spec!r}: importing {module_name} failed: {type(err).__name__}: {err}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UserError(f"{what} {spec!r}: module {module_name} has no attribute {attribute!r}") from None


@contextlib.contextmanager
def factory_failures(what: str, spec: str) -> Iterator[None]:
    """A model factory failing, built-in or a user's, is one line naming it and the cause."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a factory is reported, not raised
        raise UserError(f"{what} {spec!r} failed: {type(err).__name__}: {err}") from None


def check_model_input(cfg: ModelConfig, input_shape: tuple[int, ...]) -> None:
    entry = model_entry(cfg)
    if entry.check_input is not None:
        entry.check_input(cfg, input_shape)


def activations_per_sample(cfg: ModelConfig, input_shape: tuple[int, ...], weights: int) -> int:
    """The model's own estimate; for a pair without one, its weight count as a stand-in (a layer's
    activations are of the order of its width, its weights of width squared)."""
    entry = model_entry(cfg)
    if entry.activations is not None:
        return entry.activations(cfg, input_shape)
    return math.prod(input_shape) + max(1, math.isqrt(weights)) * 16


# ----------------------------------------------------------------------------- the built-in models


def cnn_input(cfg: ModelConfig, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise UserError(f"model cnn needs images (N, C, H, W); this dataset gives samples of shape {input_shape}")
    if min(input_shape[1:]) < 8:
        raise UserError(f"model cnn halves the image three times and needs H, W >= 8; got {input_shape[1:]}")


def cnn_activations(cfg: ModelConfig, input_shape: tuple[int, ...]) -> int:
    """The input and, per block, the conv, BatchNorm, ReLU and pooling outputs."""
    total = math.prod(input_shape)
    _, height, width = input_shape
    for channels in cfg.channels:
        total += 4 * channels * height * width
        height, width = height // 2, width // 2
    return total


def mlp_activations(cfg: ModelConfig, input_shape: tuple[int, ...]) -> int:
    """The input and, per block, the linear, BatchNorm, ReLU and dropout outputs."""
    return math.prod(input_shape) + 4 * sum(cfg.hidden)


def fashion_activations(cfg: ModelConfig, input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape) + 4 * (512 + 512)


register_model(
    ModelEntry("mlp", "torchloop.models:tabular_mlp", "flaxloop.models:tabular_mlp", None, mlp_activations, True, True)
)
register_model(
    ModelEntry(
        "fashion_mlp",
        "torchloop.models:fashion_mlp",
        "flaxloop.models:fashion_mlp",
        None,
        fashion_activations,
        False,
        True,
    )
)
register_model(
    ModelEntry(
        "cnn",
        "torchloop.models:batchnorm_cnn",
        "flaxloop.models:batchnorm_cnn",
        cnn_input,
        cnn_activations,
        False,
        True,
    )
)


def gpt_input(cfg: ModelConfig, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 1:
        raise UserError(f"model gpt needs token ids (N, T); this dataset gives samples of shape {input_shape}")


def gpt_activations(cfg: ModelConfig, input_shape: tuple[int, ...]) -> int:
    """Per position and block: the LayerNorm, q/k/v, attention output and projection (8 widths), the
    MLP's 4x-wide hidden layer before and after GELU (8 widths), the attention weights (heads x T),
    and the logits over the vocabulary (taken as 4 widths: a character vocabulary is small)."""
    (length,) = input_shape
    per_block = 16 * cfg.n_embd + 2 * cfg.n_head * length
    return length * (cfg.n_layer * per_block + 4 * cfg.n_embd)


def gpt_init(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """nanoGPT's initialisation, drawn in NumPy in the model's creation order: Linear and Embedding
    weights N(0, 0.02), the residual projections (c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0,
    LayerNorm weights 1."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E7]))
    weights = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            weights[name] = np.zeros(shape)
        elif len(shape) == 1:  # a LayerNorm weight
            weights[name] = np.ones(shape)
        else:
            std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.weight") else 0.02
            weights[name] = rng.normal(0.0, std, size=shape)
    return weights


register_model(
    ModelEntry(
        "gpt",
        "torchloop.models:gpt",
        "flaxloop.models:gpt",
        gpt_input,
        gpt_activations,
        False,
        True,
        gpt_init,
        True,
    )
)
