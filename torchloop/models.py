"""The built-in models as nn.Modules, registered in loopspec.models like any user's pair; their
state_dict names are the canonical weight layout. `build_model` builds any registered or custom
model, `model_tensors` reads its tensors' names and shapes from the module itself."""

from __future__ import annotations

import math
from typing import Any, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from loopspec.config import ModelConfig
from loopspec.errors import UserError
from loopspec.models import factory_failures, import_object, model_entry
from torchloop.layers import ParityDropout


class MLPBlock(nn.Module):
    def __init__(self, fan_in: int, width: int, dropout: float, bn_momentum: float, bn_eps: float, bias: bool):
        super().__init__()
        self.linear = nn.Linear(fan_in, width, bias=bias)
        self.norm = nn.BatchNorm1d(width, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.dropout = ParityDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.linear(x))))


class TabularMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout blocks and a linear head (the intrusion lab)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_dim: int,
        dropout: float,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        bias_before_norm: bool = False,
    ):
        super().__init__()
        widths = [in_features, *hidden]
        self.blocks = nn.ModuleList(
            MLPBlock(fan_in, width, dropout, bn_momentum, bn_eps, bias_before_norm)
            for fan_in, width in zip(widths, widths[1:])
        )
        self.head = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class FashionMLP(nn.Module):
    """Flatten, 784-512-512-10 with ReLU: the Fashion-MNIST lab's network, same state_dict names."""

    def __init__(self, in_features: int, out_dim: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(in_features, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, bn_eps: float, bias: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class BatchNormCNN(nn.Module):
    """Three Conv-BatchNorm2d-ReLU-MaxPool blocks and a linear head (the training-loop lab's CNN)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        out_dim: int,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        bias_before_norm: bool = False,
    ):
        super().__init__()
        in_channels, height, width = input_shape
        blocks = []
        for out_channels in channels:
            blocks.append(ConvBlock(in_channels, out_channels, bn_momentum, bn_eps, bias_before_norm))
            in_channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.ModuleList(blocks)
        self.classifier = nn.Linear(in_channels * height * width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = block(x)
        return self.classifier(x.flatten(1))


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention: one c_attn projection to q, k, v; scores scaled by 1/sqrt(head dim) and
    masked to the past; dropout on the attention weights and on the output."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = ParityDropout(dropout)
        self.resid_dropout = ParityDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.attn_dropout.p == 0:  # the fused kernel; with dropout the masks must be the loop's
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            y = self.attn_dropout(F.softmax(scores, dim=-1)) @ v
        y = y.transpose(1, 2).contiguous().view(batch, length, width)
        return self.resid_dropout(self.c_proj(y))


class GPTMLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()  # exact (erf); flax's gelu defaults to the tanh approximation
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = ParityDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class GPTBlock(nn.Module):
    """Pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = GPTMLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's model (its state_dict names): token and position embeddings, pre-LayerNorm blocks,
    a final LayerNorm and a head over the vocabulary, optionally the token embedding itself (tied:
    one Parameter, whose gradient sums both uses). Token ids (N, T) in, logits (N, T, V) out."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        bias: bool = True,
        tie_weights: bool = True,
    ):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                drop=ParityDropout(dropout),
                h=nn.ModuleList(GPTBlock(n_embd, n_head, dropout, bias) for _ in range(n_layer)),
                ln_f=nn.LayerNorm(n_embd, bias=bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = cast(nn.Embedding, self.transformer.wte).weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        # the ModuleDict's entries are the modules built above (torch types them as Tensor | Module)
        wte, wpe = cast(nn.Embedding, self.transformer.wte), cast(nn.Embedding, self.transformer.wpe)
        x = cast(ParityDropout, self.transformer.drop)(wte(tokens) + wpe(positions))
        for block in cast(nn.ModuleList, self.transformer.h):
            x = block(x)
        return self.lm_head(cast(nn.LayerNorm, self.transformer.ln_f)(x))


def tabular_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return TabularMLP(
        math.prod(input_shape),
        cfg.hidden,
        out_dim,
        cfg.dropout,
        cfg.batchnorm_momentum,
        cfg.batchnorm_eps,
        cfg.bias_before_norm,
    )


def fashion_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return FashionMLP(math.prod(input_shape), out_dim)


def batchnorm_cnn(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    return BatchNormCNN(
        input_shape, cfg.channels, out_dim, cfg.batchnorm_momentum, cfg.batchnorm_eps, cfg.bias_before_norm
    )


def gpt(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int) -> nn.Module:
    """Positions up to the data's block size; the vocabulary is the label classes."""
    return GPT(out_dim, input_shape[0], cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout, cfg.bias, cfg.tie_weights)


def imported_model(spec: str, kwargs: dict[str, Any], what: str, args: tuple = ()) -> Any:
    """What the factory `spec` ('pkg.module:factory') builds from `args` and `kwargs`; the factory failing
    is one line naming `what` and the cause."""
    factory = import_object(spec, what)
    with factory_failures(what, spec):
        return factory(*args, **kwargs)


def build_model(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, model: Any = None) -> nn.Module:
    """The module the config names: a built-in's registered builder; a custom pair's `model.torch`
    factory called with `model.kwargs`; or `model`, a module passed to fit(model=...) as it is."""
    entry = model_entry(cfg)
    if model is None and entry.torch is None:
        raise UserError("model custom needs model.torch ('pkg.module:factory') or a module passed as fit(model=...)")
    if model is None:
        assert entry.torch is not None  # refused above
        args, kwargs = ((cfg, tuple(input_shape), out_dim), {}) if entry.builtin else ((), cfg.kwargs)
        model = imported_model(entry.torch, kwargs, "model.torch", args)
    if not isinstance(model, nn.Module):
        raise UserError(f"the torch model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def tied_names(model: nn.Module) -> dict[str, str]:
    """A state_dict name that is another's tensor (a head tied to the embedding) -> that first name.
    The canonical layout holds a tied tensor once, as flax does (Embed.attend) and safetensors wants."""
    first: dict[int, str] = {}
    tied = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            tied[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return tied


def model_tensors(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of the module's state_dict, tied ones once: the canonical layout."""
    tied = tied_names(model)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items() if name not in tied}


def weight_shapes(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    out_dim: int,
    model: Any = None,
    reference: Any = None,
    integer_inputs: bool = False,
) -> dict[str, tuple[int, ...]]:
    """The tensors of the model the config names (or of `model`), read from its state_dict."""
    return model_tensors(build_model(cfg, input_shape, out_dim, model))
