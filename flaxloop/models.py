"""The built-in models as Flax linen modules, mirroring torchloop/models.py layer for layer, and the
seam every model goes through: `build_model` wraps a built-in, a custom pair's factory or a module
passed to fit(model=...) (flax.linen or flax.nnx) in one interface, `FlaxModel`, that the training
step, checkpoints and the pair check use.

Module names follow the torch attribute names (`blocks_0` for `blocks.0`), so
flaxloop/checkpoint.py maps them onto the canonical state_dict layout by its naming convention.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from typing import Any, Callable, Optional, Sequence, cast

import jax
import jax.numpy as jnp
from flax import linen as nn

from flaxloop.layers import BatchNorm, NnxParityDropout, ParityDropout, finding_dropout_layers
from loopspec.config import ModelConfig
from loopspec.errors import UserError
from loopspec.models import factory_failures, import_object, model_entry


class MLPBlock(nn.Module):
    width: int
    dropout: float
    bn_momentum: float
    bn_eps: float
    dtype: Any
    param_dtype: Any
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Dense(self.width, use_bias=self.bias, dtype=self.dtype, param_dtype=self.param_dtype, name="linear")(x)
        x = BatchNorm(self.bn_momentum, self.bn_eps, self.dtype, self.param_dtype, name="norm")(x, train)
        x = nn.relu(x)
        return ParityDropout(self.dropout, name="dropout")(x, train)


class TabularMLP(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout blocks and a linear head (the intrusion lab)."""

    hidden: Sequence[int]
    out_dim: int
    dropout: float
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bias_before_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            block = MLPBlock(
                width,
                self.dropout,
                self.bn_momentum,
                self.bn_eps,
                self.dtype,
                self.param_dtype,
                self.bias_before_norm,
                name=f"blocks_{i}",
            )
            x = block(x, train)
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x)


class FashionMLP(nn.Module):
    """Flatten, 784-512-512-10 with ReLU: the Fashion-MNIST lab's network."""

    out_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(dense(512, name="linear_relu_stack_0")(x))
        x = nn.relu(dense(512, name="linear_relu_stack_2")(x))
        return dense(self.out_dim, name="linear_relu_stack_4")(x)


class ConvBlock(nn.Module):
    channels: int
    bn_momentum: float
    bn_eps: float
    dtype: Any
    param_dtype: Any
    bias: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # Padding spelled out as pairs: 'SAME' is not torch's symmetric padding in general.
        x = nn.Conv(
            self.channels,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=self.bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        x = BatchNorm(self.bn_momentum, self.bn_eps, self.dtype, self.param_dtype, name="norm")(x, train)
        x = nn.relu(x)
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class BatchNormCNN(nn.Module):
    """Three Conv-BatchNorm-ReLU-MaxPool blocks and a linear head; NCHW in, NHWC inside."""

    channels: Sequence[int]
    out_dim: int
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bias_before_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 3, 1))
        for i, channels in enumerate(self.channels):
            x = ConvBlock(
                channels,
                self.bn_momentum,
                self.bn_eps,
                self.dtype,
                self.param_dtype,
                self.bias_before_norm,
                name=f"features_{i}",
            )(x, train)
        # Flatten in torch's (C, H, W) order so the head's weight means the same on both sides.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier")(x)


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention (torchloop.models.CausalSelfAttention): scores scaled by 1/sqrt(head dim)
    unless `scale` says otherwise (a planted mistake in the tests), masked to the past."""

    n_embd: int
    n_head: int
    dropout: float
    bias: bool
    dtype: Any
    param_dtype: Any
    scale: Optional[float] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        batch, length, width = x.shape
        dense = functools.partial(nn.Dense, use_bias=self.bias, dtype=self.dtype, param_dtype=self.param_dtype)
        q, k, v = jnp.split(dense(3 * width, name="c_attn")(x), 3, axis=-1)
        head_dim = width // self.n_head
        scale = 1.0 / math.sqrt(head_dim) if self.scale is None else self.scale
        # The fused kernel (as torch's scaled_dot_product_attention) below float64 only: its softmax
        # always runs in float32, 1e-8 off a float64 one.
        if self.dropout == 0 and q.dtype != jnp.float64:  # (B, T, H, D)
            q, k, v = (t.reshape(batch, length, self.n_head, head_dim) for t in (q, k, v))
            y = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True)
        else:
            q, k, v = (t.reshape(batch, length, self.n_head, head_dim).transpose(0, 2, 1, 3) for t in (q, k, v))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale
            causal = jnp.tril(jnp.ones((length, length), bool))
            # torch's softmax under autocast runs in float32, as here.
            weights = jax.nn.softmax(
                jnp.where(causal, scores, -jnp.inf).astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1
            )
            weights = ParityDropout(self.dropout, name="attn_dropout")(weights.astype(v.dtype), train)
            y = (weights @ v).transpose(0, 2, 1, 3)
        y = dense(width, name="c_proj")(y.reshape(batch, length, width))
        return ParityDropout(self.dropout, name="resid_dropout")(y, train)


class GPTMLP(nn.Module):
    n_embd: int
    dropout: float
    bias: bool
    dtype: Any
    param_dtype: Any
    approximate_gelu: bool = False  # torch's nn.GELU is exact; True is a planted mistake in the tests

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dense = functools.partial(nn.Dense, use_bias=self.bias, dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.gelu(dense(4 * self.n_embd, name="c_fc")(x), approximate=self.approximate_gelu)
        return ParityDropout(self.dropout, name="dropout")(dense(self.n_embd, name="c_proj")(x), train)


class GPTBlock(nn.Module):
    n_embd: int
    n_head: int
    dropout: float
    bias: bool
    dtype: Any
    param_dtype: Any
    ln_eps: float = 1e-5
    approximate_gelu: bool = False
    attention_scale: Optional[float] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = functools.partial(layer_norm, self.ln_eps, self.bias, self.param_dtype)
        x = x + CausalSelfAttention(
            self.n_embd,
            self.n_head,
            self.dropout,
            self.bias,
            self.dtype,
            self.param_dtype,
            self.attention_scale,
            name="attn",
        )(norm("ln_1")(x), train)
        mlp = GPTMLP(
            self.n_embd, self.dropout, self.bias, self.dtype, self.param_dtype, self.approximate_gelu, name="mlp"
        )
        return x + mlp(norm("ln_2")(x), train)


def layer_norm(eps: float, bias: bool, param_dtype: Any, name: Optional[str]) -> nn.LayerNorm:
    """torch's LayerNorm: eps 1e-5 (flax's default is 1e-6) and the two-pass variance torch computes,
    in the weights' dtype (torch's autocast keeps LayerNorm in float32)."""
    return nn.LayerNorm(epsilon=eps, use_bias=bias, use_fast_variance=False, param_dtype=param_dtype, name=name)


class GPTTransformer(nn.Module):
    """torch's `transformer` ModuleDict: wte, wpe, drop, h_<n>, ln_f (setup names them as torch does)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    bias: bool
    dtype: Any
    param_dtype: Any
    ln_eps: float = 1e-5
    approximate_gelu: bool = False
    attention_scale: Optional[float] = None

    def setup(self) -> None:
        # Embeddings stay in the weights' dtype, as torch's nn.Embedding does under autocast.
        self.wte = nn.Embed(self.vocab_size, self.n_embd, param_dtype=self.param_dtype)
        self.wpe = nn.Embed(self.block_size, self.n_embd, param_dtype=self.param_dtype)
        self.drop = ParityDropout(self.dropout)
        self.h = [
            GPTBlock(
                self.n_embd,
                self.n_head,
                self.dropout,
                self.bias,
                self.dtype,
                self.param_dtype,
                self.ln_eps,
                self.approximate_gelu,
                self.attention_scale,
            )
            for _ in range(self.n_layer)
        ]
        self.ln_f = layer_norm(self.ln_eps, self.bias, self.param_dtype, None)

    def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
        x = self.drop(self.wte(tokens) + self.wpe(jnp.arange(tokens.shape[1])), train)
        for block in self.h:
            x = block(x, train)
        return self.ln_f(x)

    def attend(self, x: jax.Array) -> jax.Array:
        """The tied head: Embed.attend's product with the token table, in the compute dtype (torch's
        autocast runs the head as a Linear; Embed.attend would promote to the table's float32)."""
        return x.astype(self.dtype) @ self.wte.embedding.astype(self.dtype).T


class GPT(nn.Module):
    """torchloop.models.GPT in linen: token ids (N, T) in, logits (N, T, V) out; with tie_weights the
    head is the token embedding (GPTTransformer.attend), whose gradient then sums both uses, as torch's does.
    ln_eps, approximate_gelu and attention_scale exist for the tests that plant porting mistakes."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    ln_eps: float = 1e-5
    approximate_gelu: bool = False
    attention_scale: Optional[float] = None

    def torch_name_map(self) -> dict[str, str]:
        """The blocks' LayerNorms: `ln_1`, `ln_2` are torch names, not list items `ln.1`, `ln.2`."""
        return {
            f"transformer/h_{i}/{norm}/{leaf}": f"transformer.h.{i}.{norm}.{torch_leaf}"
            for i in range(self.n_layer)
            for norm in ("ln_1", "ln_2")
            for leaf, torch_leaf in (("scale", "weight"), ("bias", "bias"))
        }

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        transformer = GPTTransformer(
            self.vocab_size,
            self.block_size,
            self.n_layer,
            self.n_head,
            self.n_embd,
            self.dropout,
            self.bias,
            self.dtype,
            self.param_dtype,
            self.ln_eps,
            self.approximate_gelu,
            self.attention_scale,
            name="transformer",
        )
        x = transformer(tokens, train)
        if self.tie_weights:
            return transformer.attend(x)
        head = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name="lm_head")
        return head(x)


def tabular_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, dtype: Any, param_dtype: Any) -> nn.Module:
    return TabularMLP(
        tuple(cfg.hidden),
        out_dim,
        cfg.dropout,
        cfg.batchnorm_momentum,
        cfg.batchnorm_eps,
        dtype,
        param_dtype,
        cfg.bias_before_norm,
    )


def fashion_mlp(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, dtype: Any, param_dtype: Any) -> nn.Module:
    return FashionMLP(out_dim, dtype, param_dtype)


def batchnorm_cnn(
    cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, dtype: Any, param_dtype: Any
) -> nn.Module:
    return BatchNormCNN(
        tuple(cfg.channels),
        out_dim,
        cfg.batchnorm_momentum,
        cfg.batchnorm_eps,
        dtype,
        param_dtype,
        cfg.bias_before_norm,
    )


def gpt(cfg: ModelConfig, input_shape: Sequence[int], out_dim: int, dtype: Any, param_dtype: Any) -> nn.Module:
    return GPT(
        out_dim,
        input_shape[0],
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
        cfg.dropout,
        cfg.bias,
        cfg.tie_weights,
        dtype,
        param_dtype,
    )


# ----------------------------------------------------------------------------- the seam
Variables = dict[str, Any]  # {"params": ..., "batch_stats": ...} as plain nested dicts
DropoutLayer = tuple[tuple[Any, ...], tuple[int, ...], float]  # (module path, one sample's shape, rate)


class FlaxModel:
    """What the JAX backend needs of any model, linen or nnx: its variables, a pure apply in train or
    eval mode (with parity dropout masks keyed by layer path, path_key), and its parity dropout layers."""

    kind = "flax"
    # flax path -> torch name for what the naming convention cannot say: a module's own
    # `torch_name_map()` (the built-in gpt's `ln_1`, which the convention would read as `ln.1`).
    name_map: dict[str, str] = {}

    def init(self, key: jax.Array, sample: jax.Array) -> Variables:
        raise NotImplementedError

    def names(self, configured: Optional[dict[str, str]]) -> dict[str, str]:
        """The name map: the module's own, then the config's model.name_map over it."""
        return {**self.name_map, **(configured or {})}

    def apply(
        self,
        variables: Variables,
        x: jax.Array,
        train: bool,
        rngs: Optional[dict[str, jax.Array]] = None,
        masks: Optional[dict[str, jax.Array]] = None,
    ) -> tuple[jax.Array, Any]:
        """Logits and the BatchNorm statistics after the forward pass (unchanged in eval mode)."""
        raise NotImplementedError

    def dropout_layers(self, variables: Variables, sample: jax.Array) -> list[DropoutLayer]:
        """The parity dropout layers in the order one forward pass runs them (a probe in eval mode,
        traced and not run: an eager pass would compile each operation of the model on its own)."""
        with finding_dropout_layers() as found:

            def probe(given: Variables, x: jax.Array) -> Any:
                found.clear()  # a fresh closure is traced once; were it traced again, the list starts over
                return self.apply(given, x, train=False)

            jax.eval_shape(probe, variables, sample)
        paths = [path for path, _, _ in found]
        if len(set(paths)) != len(paths):
            raise UserError("a parity dropout layer runs twice in one forward pass; give each use its own layer")
        return found


def own_name_map(module: Any) -> dict[str, str]:
    """A module's `torch_name_map()` ({flax path: torch name}), if it defines one."""
    method = getattr(module, "torch_name_map", None)
    return dict(method()) if callable(method) else {}


def path_key(path: tuple[Any, ...]) -> str:
    """A module path as one string key: ('blocks_0', 'dropout') -> 'blocks_0/dropout'."""
    return "/".join(str(part) for part in path)


def nest(flat: dict[str, Any], leaf: str) -> dict[str, Any]:
    """{'a/b': x} -> {a: {b: {leaf: x}}}: per-layer values as a flax collection."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        for part in key.split("/"):
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class LinenModel(FlaxModel):
    """A flax.linen module called `module.apply(variables, x, train=...)`; BatchNorm state in batch_stats."""

    kind = "linen"

    def __init__(self, module: nn.Module):
        self.module = module
        self.name_map = own_name_map(module)

    def init(self, key: jax.Array, sample: jax.Array) -> Variables:
        variables = self.module.init(key, sample, train=False)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    def apply(
        self,
        variables: Variables,
        x: jax.Array,
        train: bool,
        rngs: Optional[dict[str, jax.Array]] = None,
        masks: Optional[dict[str, jax.Array]] = None,
    ) -> tuple[jax.Array, Any]:
        stats = variables.get("batch_stats", {})
        given = {"params": variables["params"], "batch_stats": stats}
        if masks:
            given["dropout_masks"] = nest(masks, "mask")
        if not train:  # apply without `mutable` returns the output alone
            return cast(jax.Array, self.module.apply(given, x, train=False)), stats
        logits, updates = self.module.apply(given, x, train=True, rngs=rngs or {}, mutable=["batch_stats"])
        return logits, updates.get("batch_stats", stats)


class NnxModel(FlaxModel):
    """A flax.nnx module called `module(x)`, switched by its own `train()` / `eval()`; its nnx.Param and
    nnx.BatchStat variables travel as plain dicts, merged back for each pure apply."""

    kind = "nnx"

    def __init__(self, module: Any, build: Optional[Callable[[], Any]] = None):
        """`module` as built; or, with `build` (its factory), `module` is its nnx.eval_shape: the weights'
        values are made only when init runs, and any other state (an nnx.Rngs' key) now, in one program."""
        from flax import nnx

        self.nnx = nnx
        self.name_map = own_name_map(module)
        self.build = build
        self.graph, self.params, self.stats, self.rest = self.split(module)
        if build is not None and jax.tree.leaves(self.rest):
            self.rest = jax.jit(lambda: self.split(build())[3])()  # the weights' computations are dropped

    def split(self, module: Any) -> tuple[Any, Any, Any, Any]:
        """(graph, params, batch stats, the rest): one State per filter."""
        return cast("tuple[Any, Any, Any, Any]", self.nnx.split(module, self.nnx.Param, self.nnx.BatchStat, ...))

    def init(self, key: jax.Array, sample: jax.Array) -> Variables:
        # Built in the caller's context: traced under jax.eval_shape (the structure alone, at no cost),
        # one compiled program under jax.jit, eagerly otherwise (as the factory would run on its own).
        params, stats = self.split(self.build())[1:3] if self.build is not None else (self.params, self.stats)
        return {"params": self.nnx.to_pure_dict(params), "batch_stats": self.nnx.to_pure_dict(stats)}

    def merged(self, variables: Variables) -> Any:
        params, stats = jax.tree.map(lambda v: v, self.params), jax.tree.map(lambda v: v, self.stats)
        self.nnx.replace_by_pure_dict(params, variables["params"])
        if variables.get("batch_stats"):
            self.nnx.replace_by_pure_dict(stats, variables["batch_stats"])
        return self.nnx.merge(self.graph, params, stats, self.rest)

    def apply(
        self,
        variables: Variables,
        x: jax.Array,
        train: bool,
        rngs: Optional[dict[str, jax.Array]] = None,
        masks: Optional[dict[str, jax.Array]] = None,
    ) -> tuple[jax.Array, Any]:
        module = self.merged(variables)
        module.train() if train else module.eval()
        if train and rngs and "dropout" in rngs:  # framework-mode dropout: this pass's own key
            with contextlib.suppress(Exception):
                self.nnx.reseed(module, dropout=rngs["dropout"], default=rngs["dropout"])
        if masks:
            for path, layer in self.nnx.iter_modules(module):
                if path_key(path) in masks:  # a parity dropout layer's path (dropout_layers)
                    cast(NnxParityDropout, layer).mask = masks[path_key(path)]
        logits = module(x)
        return logits, self.nnx.to_pure_dict(self.nnx.state(module, self.nnx.BatchStat))

    def dropout_layers(self, variables: Variables, sample: jax.Array) -> list[DropoutLayer]:
        layers: list[DropoutLayer] = []

        def probe(given: Variables, x: jax.Array) -> jax.Array:
            module = self.merged(given)
            paths = {id(layer): path for path, layer in self.nnx.iter_modules(module)}
            module.eval()
            with finding_dropout_layers() as found:
                out = module(x)
            layers[:] = [(paths[id(layer)], shape, rate) for layer, shape, rate in found]
            return out

        jax.eval_shape(probe, variables, sample)  # traced, not run (see FlaxModel.dropout_layers)
        if len({path for path, _, _ in layers}) != len(layers):
            raise UserError("a parity dropout layer runs twice in one forward pass; give each use its own layer")
        return layers


def from_factory(build: Callable[[], Any]) -> FlaxModel:
    """The model a factory builds. An nnx module computes its initial weights as it is built, each
    operation compiled on its own (5 s for a small Transformer, measured), and a parity run replaces them
    with the torch model's: so it is built abstractly, and its values made only if init asks for them.
    The factory is called more than once, and under tracing: it must build a fresh module each call."""
    from flax import nnx

    def nnx_only() -> Any:
        module = build()
        return module if isinstance(module, nnx.Module) else None

    try:
        abstract = nnx.eval_shape(nnx_only)
    except Exception:  # noqa: BLE001 - untraceable (reads a value, a Variable of a string): built as it is, below
        abstract = None
    # linen builds no arrays, and an nnx module holding a plain array keeps it in its structure (a tracer
    # there): both built again outside the trace; a broken factory then fails with its own error
    if abstract is None or holds_tracers(abstract):
        return as_flax_model(build())
    return NnxModel(abstract, build)


def holds_tracers(module: Any) -> bool:
    """Whether any attribute of the module's nodes holds a traced array (not inside an nnx.Variable)."""
    from flax import nnx

    for _, node in nnx.iter_graph(module):
        values = vars(node).values() if hasattr(node, "__dict__") else ()
        if any(isinstance(leaf, jax.core.Tracer) for value in values for leaf in jax.tree.leaves(value)):
            return True
    return False


def as_flax_model(module: Any) -> FlaxModel:
    """A flax.linen Module or a flax.nnx Module behind the one interface; anything else is one line."""
    from flax import nnx

    if isinstance(module, FlaxModel):
        return module
    if isinstance(module, nn.Module):
        parameters = inspect.signature(type(module).__call__).parameters
        if "train" not in parameters:
            raise UserError(
                f"the flax.linen module {type(module).__name__} must take `train` in __call__(x, train: bool) "
                "(BatchNorm and dropout switch on it); flax.nnx modules switch with train()/eval() instead"
            )
        return LinenModel(module)
    if isinstance(module, nnx.Module):
        return NnxModel(module)
    raise UserError(f"the flax model must be a flax.linen or flax.nnx Module, got {type(module).__name__}")


def dtype_arguments(factory: Any, dtype: Any, param_dtype: Any) -> dict[str, Any]:
    """The run's compute and weight dtypes, for a factory that takes `dtype` / `param_dtype` (flax's
    names): how a custom module computes in bf16 with float32 weights, or wholly in float64."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {name: value for name, value in (("dtype", dtype), ("param_dtype", param_dtype)) if name in parameters}


def imported_model(
    spec: str, kwargs: dict[str, Any], dtype: Any, param_dtype: Any, what: str, args: tuple = ()
) -> FlaxModel:
    """The FlaxModel the factory `spec` ('pkg.module:factory') builds from `args` and `kwargs`, with the
    run's dtypes where it takes them; the factory failing is one line naming `what` and the cause."""
    factory = import_object(spec, what)
    with factory_failures(what, spec):  # the arguments too: kwargs may repeat dtype
        dtypes = dtype_arguments(factory, dtype, param_dtype)
        return from_factory(functools.partial(factory, *args, **kwargs, **dtypes))


def build_model(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    out_dim: int,
    dtype: Any,
    param_dtype: Optional[Any] = None,
    model: Any = None,
) -> FlaxModel:
    """The model the config names behind the FlaxModel interface: a built-in's registered builder
    (computing in `dtype`, weights in `param_dtype`); a custom pair's `model.flax` factory called with
    `model.kwargs`; or `model`, a module passed to fit(model=...) as it is."""
    param_dtype = dtype if param_dtype is None else param_dtype
    entry = model_entry(cfg)
    if model is None and entry.flax is None:
        raise UserError("model custom needs model.flax ('pkg.module:factory') or a module passed as fit(model=...)")
    if model is None:
        assert entry.flax is not None  # refused above
        args, kwargs = ((cfg, tuple(input_shape), out_dim), {}) if entry.builtin else ((), cfg.kwargs)
        return imported_model(entry.flax, kwargs, dtype, param_dtype, "model.flax", args)
    return as_flax_model(model)


def weight_shapes(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    out_dim: int,
    model: Any = None,
    reference: Optional[dict[str, tuple[int, ...]]] = None,
    integer_inputs: bool = False,
) -> dict[str, tuple[int, ...]]:
    """The tensors of the model the config names (or of `model`) under torch's names and layouts: its
    variables' shapes through the name map (matched against `reference`, the given initial weights'
    names and shapes, when there are any)."""
    from flaxloop.checkpoint import NameMap, flax_leaves, torch_layout_shape, unflatten_leaves

    flax_model = build_model(cfg, input_shape, out_dim, jnp.float32, jnp.float32, model)
    sample = jnp.zeros((2, *input_shape), jnp.int32 if integer_inputs else jnp.float32)
    created: list = []  # the leaves in the order the model creates them (a jax output dict is sorted)

    def leaves(key: jax.Array, x: jax.Array) -> list:
        found = flax_leaves(flax_model.init(key, x))
        created.extend(found)
        return list(found.values())

    traced = jax.eval_shape(leaves, jax.random.PRNGKey(0), sample)
    shapes = dict(zip(list(created), traced))
    variables = unflatten_leaves(shapes)
    names = NameMap.build(variables, reference, flax_model.names(cfg.name_map))
    return {
        names.torch_name(collection, path): torch_layout_shape(str(path[-1]), value.shape)
        for (collection, path), value in shapes.items()
    }
