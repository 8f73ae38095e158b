"""The pair check: a user's PyTorch and Flax models, compared submodule by submodule before any
training time is spent, then trained side by side.

    report = paritykit.check_models(config, torch_model, flax_model, data, "runs/pair")
    print(report.render()); report.agree

Stage 1, in float64 from the torch module's own initial weights (loaded into the flax model through
the name map): one probe batch through both models in eval mode and in train mode (the parity
dropout masks given, BatchNorm on batch statistics), every submodule's output compared in the order
torch finishes them, then the loss and every parameter's gradient. The first submodule whose output
differs is named with its difference, and the last that still agreed: where a port went wrong.
Stage 2 trains both from those weights (loopspec.fit) and compares the runs: at 1e-10 in float64,
by the one-ulp envelope in float32. It returns the comparison and never raises on disagreement;
input that cannot be compared at all (not a module, a name map that does not cover the model, a
forward that raises, non-finite outputs) is one line (UserError).
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, cast

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from flaxloop.checkpoint import NameMap, export_weights, import_weights
from flaxloop.layers import NnxParityDropout
from flaxloop.losses import make_loss as make_flax_loss
from flaxloop.models import (
    FlaxModel,
    LinenModel,
    NnxModel,
    as_flax_model,
    imported_model,
    path_key,
)
from flaxloop.state import in_dtype
from loopspec.comparison import Report, compare_runs
from loopspec.config import Config, as_config, config_from_dict
from loopspec.data import Dataset, arrays_dataset, load_dataset
from loopspec.dropout import parity_dropout_mask
from loopspec.errors import UserError
from loopspec.models import output_dim
from torchloop.checkpoint import export_weights as torch_weights
from torchloop.checkpoint import import_weights as load_torch_weights
from torchloop.layers import dropout_layers, parity_masks
from torchloop.losses import make_loss as make_torch_loss
from torchloop.models import imported_model as imported_torch_model

FLOAT64_RTOL = 1e-10
PROBE_ROWS = 8


@dataclass
class Quantity:
    """One compared quantity of the probe: a submodule's output, the loss, or a gradient."""

    stage: str  # "eval forward", "train forward", "loss", "gradient"
    name: str  # torch's name
    kind: str  # the torch module's class, or the parameter's shape
    rel: float
    values: tuple[Any, Any] = (None, None)  # torch's and flax's, where a diagnosis reads them (the loss)

    @property
    def ok(self) -> bool:
        return self.rel <= FLOAT64_RTOL


@dataclass
class PairReport:
    """Everything check_models compared: `.agree`, `.render()`, `.first_difference`."""

    quantities: list[Quantity] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # torch submodules without a flax output (not judged)
    training: Optional[Report] = None
    training_verdict: Optional[Any] = None  # the float32 verdict (paritykit.sensitivity.Verdict)
    runs: dict[str, Path] = field(default_factory=dict)

    @property
    def first_difference(self) -> Optional[Quantity]:
        return next((q for q in self.quantities if not q.ok), None)

    @property
    def last_agreeing(self) -> Optional[Quantity]:
        first = self.first_difference
        before = self.quantities if first is None else self.quantities[: self.quantities.index(first)]
        return before[-1] if before else None

    @property
    def agree(self) -> bool:
        trained = True
        if self.training is not None:
            trained = self.training.agree
        if self.training_verdict is not None:
            trained = self.training_verdict.agree
        return self.first_difference is None and trained

    def render(self) -> str:
        lines = ["pair check, float64, one probe batch from the torch module's initial weights:"]
        first = self.first_difference
        shown = self.quantities if len(self.quantities) <= 40 else [q for q in self.quantities if not q.ok][:20]
        stages = sorted({q.stage for q in self.quantities}, key=[q.stage for q in self.quantities].index)
        counts = ", ".join(f"{sum(q.stage == stage for q in self.quantities)} {stage}" for stage in stages)
        lines.append(f"  compared: {counts}")
        for q in shown:
            lines.append(f"  {q.stage:<14} {q.name:<40} {q.kind:<22} {q.rel:>10.2e}  {'ok' if q.ok else 'DIFFERS'}")
        if first is not None:
            last = self.last_agreeing
            lines.append(
                f"first difference: {first.stage} of {first.name} ({first.kind}), relative {first.rel:.2e}; "
                f"last agreeing: {'nothing' if last is None else f'{last.stage} of {last.name}'}"
            )
        else:
            lines.append(f"every submodule output, the loss and every gradient agree to {FLOAT64_RTOL:g}")
        if self.unmatched:
            lines.append(f"torch submodules with no flax output to compare: {', '.join(self.unmatched[:6])}")
        if self.training is not None:
            lines.append(f"training ({self.runs.get('torch')} vs {self.runs.get('jax')}):")
            lines += ["  " + line for line in self.training.render().splitlines()[-8:]]
        if self.training_verdict is not None:
            lines += ["  " + line for line in self.training_verdict.render().splitlines()]
        lines.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- building the two models


def torch_module(model: Any, kwargs: dict[str, Any]) -> torch.nn.Module:
    if isinstance(model, str):
        model = imported_torch_model(model, kwargs, "the torch model")
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"the torch model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def flax_module(model: Any, kwargs: dict[str, Any], dtype: Any = jnp.float64) -> Any:
    """A flax module object as given, or the FlaxModel an import string's factory builds (one that takes
    `dtype` / `param_dtype` gets `dtype`: the probe runs in float64)."""
    if isinstance(model, str):
        with jax.enable_x64(dtype == jnp.float64):  # float64 asked for outside a float64 scope is float32
            return imported_model(model, kwargs, dtype, dtype, "the flax model")
    as_flax_model(model)  # not a module, or a linen module without `train`: one line
    return model


def dataset_of(config: Config, data: Any) -> Dataset:
    if data is None:
        return load_dataset(config.data)
    if isinstance(data, (str, Path)):
        with np.load(data) as archive:
            return arrays_dataset({key: archive[key] for key in archive.files}, str(data))
    return arrays_dataset(data)


# ----------------------------------------------------------------------------- capturing submodule outputs


def first_array(value: Any) -> Any:
    while isinstance(value, (tuple, list)) and value:
        value = value[0]
    return value


def torch_outputs(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, str, Any]]]:
    """The module's logits, and (name, class, output) of every submodule in the order they finish."""
    records: list[tuple[str, str, Any]] = []
    handles = []
    for name, sub in module.named_modules():
        if name:

            def record(layer: torch.nn.Module, inputs: Any, output: Any, name: str = name) -> None:
                records.append((name, type(layer).__name__, first_array(output)))

            handles.append(sub.register_forward_hook(record))
    try:
        logits = module(x)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"the torch model's forward raised {type(err).__name__}: {err}") from None
    finally:
        for handle in handles:
            handle.remove()
    return logits, records


def linen_outputs(model: LinenModel, variables: dict, x: jax.Array, train: bool, masks: dict) -> tuple[Any, dict]:
    given = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if masks:
        from flaxloop.models import nest

        given["dropout_masks"] = nest(masks, "mask")
    mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
    logits, state = model.module.apply(given, x, train=train, capture_intermediates=True, mutable=mutable)
    outputs = {}
    flat = _flatten(state.get("intermediates", {}))
    for path, value in flat.items():
        if path[-1] == "__call__" and len(path) > 1:
            outputs[path_key(path[:-1])] = first_array(value)
    return logits, outputs


def _flatten(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for key, value in tree.items():
            out.update(_flatten(value, (*prefix, key)))
    else:
        out[prefix] = tree
    return out


def nnx_outputs(model: NnxModel, variables: dict, x: jax.Array, train: bool, masks: dict) -> tuple[Any, dict]:
    module = model.merged(variables)
    module.train() if train else module.eval()
    outputs: dict[str, Any] = {}
    swapped = []
    for path, sub in nnx.iter_modules(module):
        if not path:
            continue
        if masks and path_key(path) in masks:  # a parity dropout layer's path (dropout_layers)
            cast(NnxParityDropout, sub).mask = masks[path_key(path)]
        cls = type(sub)

        def call(self: Any, *args: Any, cls: type = cls, key: str = path_key(path), **kwargs: Any) -> Any:
            out = cls.__call__(self, *args, **kwargs)
            outputs[key] = first_array(out)
            return out

        sub.__class__ = type(cls.__name__, (cls,), {"__call__": call})
        swapped.append((sub, cls))
    try:
        logits = module(x)
    finally:
        for sub, cls in swapped:
            sub.__class__ = cls
    return logits, outputs


@contextlib.contextmanager
def flax_forward_errors() -> Iterator[None]:
    """A user's flax forward that raises becomes one line (UserError) naming the error."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise UserError(f"the flax model's forward raised {type(err).__name__}: {str(err).splitlines()[0]}") from None


def flax_outputs(model: FlaxModel, variables: dict, x: jax.Array, train: bool, masks: dict) -> tuple[Any, dict]:
    with flax_forward_errors():
        if isinstance(model, LinenModel):
            return linen_outputs(model, variables, x, train, masks)
        return nnx_outputs(cast(NnxModel, model), variables, x, train, masks)  # the other kind of FlaxModel


def torch_name_of(flax_key: str) -> str:
    """A flax module path as torch names it by the convention: blocks_0/norm -> blocks.0.norm."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", part) for part in flax_key.split("/"))


def normal(name: str) -> str:
    return re.sub(r"[._/]+", ".", name)


def as_torch_layout(flax_value: np.ndarray, torch_shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """A flax activation in torch's layout: as it is, or channels moved from last to second (NHWC, NLC)."""
    if flax_value.shape == torch_shape:
        return flax_value
    if flax_value.ndim >= 3:
        moved = np.moveaxis(flax_value, -1, 1)
        if moved.shape == torch_shape:
            return moved
    return None


def relative(a: Any, b: Any, floor: float = 1e-300) -> float:
    """max |a - b| over the larger magnitude (at least `floor`); inf when the shapes differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), floor)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def compare_outputs(
    stage: str, torch_records: list, flax_records: dict, name_map: dict[str, str], report: PairReport
) -> None:
    modules = {normal(torch_name_of(key)): value for key, value in flax_records.items()}
    for flax_key, torch_name in name_map.items():  # explicit map entries name modules by their leaves' parents
        module_key = flax_key.rsplit("/", 1)[0]
        if module_key in flax_records:
            modules[normal(torch_name.rsplit(".", 1)[0])] = flax_records[module_key]
    for name, kind, value in torch_records:
        if not isinstance(value, torch.Tensor):
            continue
        theirs = modules.get(normal(name))
        ours = value.detach().double().numpy()
        if theirs is None:
            if name not in report.unmatched:
                report.unmatched.append(name)
            continue
        theirs = as_torch_layout(np.asarray(theirs, np.float64), ours.shape)
        if theirs is None:
            report.quantities.append(Quantity(stage, name, f"{kind} (shapes differ)", float("inf")))
            continue
        report.quantities.append(Quantity(stage, name, kind, relative(ours, theirs)))


# ----------------------------------------------------------------------------- the check


def probe(
    config: Config,
    torch_model: torch.nn.Module,
    flax_model: Any,
    dataset: Dataset,
    name_map: dict[str, str],
    report: PairReport,
    loss: Optional[tuple[Any, Any]] = None,
    state: Optional[dict[str, np.ndarray]] = None,
    rows: Optional[np.ndarray] = None,
    forward_pass: int = 0,
) -> dict[str, np.ndarray]:
    """Stage 1 in float64; returns the torch module's initial weights (both trainings start there).
    The locator probes a later update: `state` the weights and buffers before it (canonical names),
    `rows` its batch, `forward_pass` the index its parity dropout masks are drawn for."""
    reference = copy.deepcopy(torch_model).double()
    if state is not None:
        load_torch_weights(reference, state)
    weights = torch_weights(reference)  # a tied tensor once
    out_dim = output_dim(config.loss.name, dataset.num_classes)
    rows = np.arange(min(PROBE_ROWS, len(dataset.y_train))) if rows is None else rows
    x, y = dataset.x_train[rows], dataset.y_train[rows]
    integer = np.issubdtype(x.dtype, np.integer)
    x_torch = torch.as_tensor(x, dtype=torch.int64 if integer else torch.float64)
    for mode in ("eval", "train"):  # the torch model alone first: a forward that raises, a wrong width, NaNs
        with torch.no_grad():
            logits, _ = torch_outputs(copy.deepcopy(reference).train(mode == "train"), x_torch)
        check_logits(logits, out_dim, dataset, mode)
    with jax.enable_x64(True):
        model = as_flax_model(flax_model)
        sample = jnp.asarray(x, jnp.int32 if integer else jnp.float64)
        shapes = in_dtype(jax.eval_shape(model.init, jax.random.PRNGKey(0), sample), jnp.float64)
        names = NameMap.build(shapes, {k: tuple(v.shape) for k, v in weights.items()}, model.names(name_map))
        variables = import_weights(shapes, weights, names)
        # A rate-0 layer is the identity, and a model may skip it (a fused attention kernel).
        found = [layer for layer in dropout_layers(reference, x_torch[:2]) if layer[2] > 0]
        masks = [
            parity_dropout_mask(config.seed, i, forward_pass, np.arange(len(y)), shape, rate)
            for i, (_, shape, rate, _) in enumerate(found)
        ]
        with flax_forward_errors():
            flax_found = [layer for layer in model.dropout_layers(variables, sample[:2]) if layer[2] > 0]
        check_dropout_pairing(found, flax_found)
        keyed = {path_key(path): jnp.asarray(m) for (path, _, _), m in zip(flax_found, masks)}
        # Eval mode first (running statistics), then train mode with the same masks.
        reference.eval()
        with torch.no_grad():
            logits, records = torch_outputs(reference, x_torch)
        flax_logits, flax_records = flax_outputs(model, variables, sample, False, {})
        check_logits(logits, out_dim, dataset, "eval")
        compare_outputs("eval forward", records, flax_records, name_map, report)
        reference.train()
        with parity_masks([layer for *_, layer in found], [torch.as_tensor(m) for m in masks] if found else None):
            logits, records = torch_outputs(reference, x_torch)
        flax_logits, flax_records = flax_outputs(model, variables, sample, True, keyed)
        check_logits(logits, out_dim, dataset, "train")
        compare_outputs("train forward", records, flax_records, name_map, report)
        compare_buffers(reference, model, variables, names, sample, keyed, report)
        compare_loss_and_gradients(config, reference, model, variables, names, found, masks, keyed, x, y, report, loss)
    return weights


def check_dropout_pairing(found: list, flax_found: list) -> None:
    """The parity dropout layers pair up in the order they run, with equal rates and sample shapes."""
    torch_side = [(name, shape, rate) for name, shape, rate, _ in found]
    flax_side = [(path_key(path), tuple(shape), rate) for path, shape, rate in flax_found]
    if len(torch_side) != len(flax_side) or any((t[1], t[2]) != (f[1], f[2]) for t, f in zip(torch_side, flax_side)):
        torch_text, flax_text = ([f"{n} {s} p={r:g}" for n, s, r in side] for side in (torch_side, flax_side))
        raise UserError(
            f"the models' parity dropout layers do not pair up in the order they run (torch: {torch_text}; "
            f"flax: {flax_text}); give both the same dropout layers, rates and input shapes"
        )


def check_logits(logits: torch.Tensor, out_dim: int, dataset: Dataset, mode: str) -> None:
    if logits.ndim < 2 or logits.shape[-1] != out_dim:
        raise UserError(
            f"the models' output is {tuple(logits.shape)}; the loss and labels ({dataset.num_classes} classes) need "
            f"(N, ..., {out_dim}) logits"
        )
    if not torch.isfinite(logits).all():
        raise UserError(f"the torch model's {mode}-mode output at start-up holds NaN/inf values")


def compare_buffers(
    reference: torch.nn.Module,
    model: FlaxModel,
    variables: dict,
    names: NameMap,
    sample: jax.Array,
    keyed: dict,
    report: PairReport,
) -> None:
    """BatchNorm's running statistics after the train-mode forward pass (momentum, unbiased variance)."""
    _, stats = model.apply(variables, sample, True, {"dropout": jax.random.PRNGKey(0)}, keyed)
    if not stats:
        return
    exported = export_weights({"batch_stats": stats}, names)
    for name, buffer in reference.named_buffers():
        if name in exported and buffer.is_floating_point():
            ours = buffer.detach().double().numpy()
            report.quantities.append(Quantity("buffer", name, str(tuple(ours.shape)), relative(ours, exported[name])))


def compare_loss_and_gradients(
    config: Config,
    reference: torch.nn.Module,
    model: FlaxModel,
    variables: dict,
    names: NameMap,
    found: list,
    masks: list,
    keyed: dict,
    x: np.ndarray,
    y: np.ndarray,
    report: PairReport,
    loss_pair: Optional[tuple[Any, Any]] = None,
) -> None:
    num_classes = int(max(y.max() + 1, 2))
    out_dim = output_dim(config.loss.name, num_classes)
    if loss_pair is None:
        torch_loss_fn, flax_loss_fn = make_torch_loss(config.loss, num_classes, out_dim).double(), None
        flax_loss_fn = make_flax_loss(config.loss, num_classes, out_dim)
    else:
        torch_loss_fn, flax_loss_fn = loss_pair
    integer = np.issubdtype(x.dtype, np.integer)
    fresh = copy.deepcopy(reference).double().train()
    with parity_masks(
        [layer for name, *_ in found for layer in [dict(fresh.named_modules())[name]]],
        [torch.as_tensor(m) for m in masks] if found else None,
    ):
        logits = fresh(torch.as_tensor(x, dtype=torch.int64 if integer else torch.float64))
    loss = torch_loss_fn(logits, torch.as_tensor(y))
    if loss.ndim != 0:
        raise UserError(
            f"the torch loss gives shape {tuple(loss.shape)}; a loss maps (logits, labels) to a mean scalar"
        )
    loss.backward()
    torch_grads = {name: p.grad.detach().numpy() for name, p in fresh.named_parameters() if p.grad is not None}
    sample = jnp.asarray(x, jnp.int32 if integer else jnp.float64)

    def flax_loss(params: Any, others: dict, inputs: jax.Array, labels: jax.Array, masks: Any) -> jax.Array:
        out, _ = model.apply({**others, "params": params}, inputs, True, {"dropout": jax.random.PRNGKey(0)}, masks)
        return flax_loss_fn(out, labels)

    # One compiled program: run op by op, JAX compiled each primitive on its own (8 of the locator's
    # 18 s on the default recipe).
    others = {key: value for key, value in variables.items() if key != "params"}
    loss_and_grads = jax.jit(jax.value_and_grad(flax_loss))
    value, grads = loss_and_grads(variables["params"], others, sample, jnp.asarray(y), keyed)
    if not np.isfinite(float(value)):
        raise UserError("the flax model's loss at start-up is NaN/inf")
    label = config.loss.name if loss_pair is None else "the loss pair"
    report.quantities.append(
        Quantity("loss", label, "scalar", relative(loss.item(), float(value)), (loss.item(), float(value)))
    )
    exported = export_weights({"params": grads}, names)
    for name, grad in torch_grads.items():
        if name in exported:
            report.quantities.append(Quantity("gradient", name, str(tuple(grad.shape)), relative(grad, exported[name])))


def check_models(
    config: Config | dict[str, Any] | str | Path,
    torch_model: Any,
    flax_model: Any,
    data: Any,
    out_dir: str | Path,
    *,
    name_map: Optional[dict[str, str]] = None,
    loss: Optional[tuple[Any, Any]] = None,
    train: bool = True,
) -> PairReport:
    """Stage 1 (the probe, float64) and stage 2 (both trainings from the torch module's initial weights).
    `torch_model`/`flax_model`: modules or import strings 'pkg.module:factory' (called with the
    config's model.kwargs); `data`: a dict of arrays or an .npz path (None: the config's dataset);
    `loss`: a pair (torch_fn, jax_fn), each (logits, labels) -> the mean loss, checked on the probe
    batch like the models and used by both trainings (None: the config's loss)."""
    from loopspec import fit

    config = as_config(config)
    raw = config.to_dict()
    raw["model"]["name"] = "custom"
    if name_map:
        raw["model"]["name_map"] = dict(name_map)
    config = config_from_dict(raw)
    kwargs = config.model.kwargs
    strings = {"torch": torch_model, "jax": flax_model}
    torch_model, flax_model = torch_module(torch_model, kwargs), flax_module(flax_model, kwargs)
    dataset = dataset_of(config, data)
    report = PairReport()
    weights = probe(config, torch_model, flax_model, dataset, config.model.name_map, report, loss)
    if not train:
        return report
    out = Path(out_dir)
    arrays = (
        data if data is not None else {f"{k}_{s}": getattr(dataset, f"{k}_{s}") for k in "xy" for s in ("train", "val")}
    )
    runs = {}
    for backend, module in (("torch", torch_model), ("jax", flax_model)):
        given = strings[backend] if isinstance(strings[backend], str) else module  # a string: the run's dtypes
        given = copy.deepcopy(given) if backend == "torch" and not isinstance(given, str) else given
        own = None if loss is None else loss[0 if backend == "torch" else 1]
        run = fit(
            config, out / backend, backend=backend, model=given, data=arrays, init=weights, overwrite=True, loss=own
        )
        runs[backend] = run.out_dir
    report.runs = runs
    if config.train.precision == "fp64":
        report.training = compare_runs(runs["torch"], runs["jax"], FLOAT64_RTOL)
    return report
