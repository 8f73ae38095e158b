"""The backends mirror each other: lay flaxloop/X.py beside torchloop/X.py and the same names come
in the same order (classes against functions compare in snake_case: SigmoidFocalLoss is
sigmoid_focal_loss; each backend class's methods as Backend.*). What only one framework needs is
declared here with the reason, so the list cannot silently grow, and every declared name must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    "train",
    "checkpoint",
    "losses",
    "optim",
    "schedules",
    "precision",
    "parallel",
    "inference",
    "models",
    "layers",
    "dropout",
]

# module -> backend -> {name: why only this framework needs it}
FRAMEWORK_ONLY: dict[str, dict[str, dict[str, str]]] = {
    "train": {
        "torch": {
            "Backend.on_device": "torch moves each batch to the device itself",
            "Backend.input_dtype": "torch tensors are typed when made; JAX casts the inputs once (inputs_as)",
            "step_metrics": "JAX's StepMetrics lives with its TrainState (flaxloop.state)",
            "snapshot": "torch's state changes in place: an update read back late keeps the state before it",
            "copied": "torch's state changes in place: an update read back late keeps the state before it",
            "Backend.run": "torch may redo an update dispatched after one it undoes (JAX skips in the step)",
            "Backend.snapshot": "torch's state changes in place: an update read back late keeps the state before it",
            "Backend.restore": "torch's state changes in place: an update read back late keeps the state before it",
            "Backend.rng_state": "framework-mode dropout draws from torch's global generators",
            "Backend.set_rng": "framework-mode dropout draws from torch's global generators",
        },
        "jax": {
            "inputs_as": "JAX casts the inputs once, token ids as int32 (torch types each tensor it makes)",
            "stack_window": "lax.scan needs equal micro-batches stacked",
            "Backend.place": "JAX places shards on a device mesh; DDP's ranks hold their own",
        },
    },
    "checkpoint": {
        "torch": {
            "set_hyperparameters": "torch keeps lr and momentum in param groups",
            "fits_model": "load_training_state takes a user's nn.Module, checked before loading",
            "parameter_names_in_groups": "torch's optimizer state is indexed by position in its parameter groups",
        },
        "jax": {
            "convention_name": "flax names differ from torch's state_dict names",
            "normalized": "flax names differ from torch's state_dict names",
            "to_torch_layout": "flax kernels are (in, out) and (k..., in, out)",
            "torch_layout_shape": "flax kernels are (in, out) and (k..., in, out)",
            "from_torch_layout": "flax kernels are (in, out) and (k..., in, out)",
            "flax_leaves": "flax variables are nested collections",
            "unflatten_leaves": "flax variables are nested collections",
            "name_map": "flax leaves get torch's names through the name map",
            "variables_of": "flax variables are collections of a TrainState",
            "hyperparams_state": "optax keeps lr and momentum in its (MultiSteps-wrapped) state",
            "slot_fields": "optax states name their slots differently from torch",
        },
    },
    "losses": {
        "torch": {
            "binary_targets": "torch's stock losses take float targets shaped as the logits",
            "one_hot_targets": "torch's stock losses take float targets shaped as the logits",
        },
        "jax": {
            "cross_entropy": "torch has nn.CrossEntropyLoss",
            "binary_cross_entropy": "torch has nn.BCEWithLogitsLoss",
        },
    },
    "optim": {
        "torch": {},
        "jax": {
            "dampened_trace_state": "torch.optim.SGD has dampening; optax.trace does not",
            "dampened_trace": "torch.optim.SGD has dampening; optax.trace does not",
            "bias_correction": "optax's float32 bias correction is not torch's",
            "adam_denominator": "torch adds eps outside the square root",
            "adam_state": "torch's Adam state, AMSGrad max before bias correction",
            "scale_by_torch_adam": "torch's Adam arithmetic",
            "adagrad_state": "torch's Adagrad state",
            "scale_by_torch_adagrad": "torch's Adagrad arithmetic",
            "gradient_stats": "torch's clip_grad_norm_ returns the norm; optax's chain keeps it in state",
            "record_gradient_stats": "torch's clip_grad_norm_ returns the norm; optax's chain keeps it in state",
            "clip_grad_norm_torch": "optax.clip_by_global_norm has no 1e-6",
            "optimizer_chain": "one optax.chain from the config",
            "accumulate": "optax.MultiSteps",
            "make_tx": "the whole optax transformation (schedules injected)",
        },
    },
    "schedules": {
        "torch": {"current_momentum": "torch keeps momentum or beta1 in a param group"},
        "jax": {
            "schedule_tables": "torch's doubles rounded once, for the jitted step",
            "lookup": "a table read by optax's update count",
            "schedule_value": "a value stored between epochs (torch's scheduler holds its own)",
            "reduce_lr_on_plateau": "torch has torch.optim.lr_scheduler.ReduceLROnPlateau",
        },
    },
    "precision": {
        "torch": {
            "set_matmul_precision": "torch sets TF32 globally; JAX scopes it in precision_scope",
            "make_grad_scaler": "torch has torch.amp.GradScaler",
        },
        "jax": {
            "precision_scope": "JAX scopes float64 and the matmul precision",
            "loss_scale": "flax has no GradScaler: the loss scale is a pytree of the TrainState",
        },
    },
    "parallel": {
        "torch": {
            "torchrun_hint": "torch's replicas are processes launched by torchrun",
            "leave_replica_process": "gloo's threads outlive the process group; a torchrun rank skips teardown",
            "distributed": "DistributedDataParallel wraps the model",
            "share_buffers": "DDP broadcasts rank 0's buffers",
            "mean_over_replicas": "each rank computes its own loss",
            "any_replica": "each rank receives its own signals",
        },
        "jax": {
            "request_cpu_devices": "XLA needs its host device count before it starts",
            "replica_mesh": "JAX shards over a device mesh",
            "replicate": "JAX places the state on every device of the mesh",
            "shard_replica_axis": "JAX places each replica's shard on its device",
        },
    },
    "inference": {
        "torch": {},
        "jax": {"trained_model": "a flax module is stateless: the model travels with its variables"},
    },
    "models": {
        "torch": {
            "model_tensors": "a torch module's state_dict is the layout itself",
            "tied_names": "torch's state_dict lists a tied tensor under both names; flax holds one leaf",
        },
        "jax": {
            "flax_model": "linen and nnx modules behind one interface",
            "path_key": "flax layers are keyed by their paths",
            "nest": "flax takes per-layer values as a nested collection",
            "linen_model": "linen and nnx modules behind one interface",
            "nnx_model": "linen and nnx modules behind one interface",
            "as_flax_model": "linen and nnx modules behind one interface",
            "from_factory": "an nnx module compiles its init op by op as it is built; torch builds uncompiled",
            "holds_tracers": "from_factory's check that an abstract nnx build kept no traced array",
            "dtype_arguments": "flax modules take their dtypes at construction (torch casts with .to)",
            "layer_norm": "flax's LayerNorm needs torch's eps and exact variance spelled out",
            "gpt_transformer": "torch's GPT holds its transformer in an nn.ModuleDict; linen needs a module",
            "own_name_map": "flax names the convention cannot map come from the module (torch's are the names)",
        },
    },
    "dropout": {"torch": {}, "jax": {}},
    "layers": {
        "torch": {
            "parity_masks": "a torch layer holds its mask for one forward pass",
            "dropout_layers": "torch finds its layers with forward hooks (flax: FlaxModel.dropout_layers)",
        },
        "jax": {
            "running_variance": "flax's BatchNorm keeps the biased variance",
            "normalise": "torch's BatchNorm arithmetic, shared by the linen and nnx layers",
            "linear_and_constant_terms": "torch's CPU kernel's alpha and beta, which nn.BatchNorm*d computes inside",
            "batch_norm": "flax's BatchNorm has other semantics than torch's (torch: nn.BatchNorm*d)",
            "nnx_batch_norm": "the same for flax.nnx",
            "nnx_parity_dropout": "the same for flax.nnx",
            "finding_dropout_layers": "flax layers record themselves while a probe runs",
        },
    },
}


def snake(name: str) -> str:
    """SigmoidFocalLoss -> sigmoid_focal_loss; JaxBackend/TorchBackend -> backend."""
    if name.endswith("Backend") and name != "Backend":
        return "backend"
    if "." in name or name.islower():
        return name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def public_names(path: Path) -> list[str]:
    """Top-level functions, classes and lowercase assignments in order; a backend class's methods."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(snake(node.name))
            if isinstance(node, ast.ClassDef) and node.name.endswith("Backend"):
                names += [f"Backend.{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id[0].islower():
                names.append(node.targets[0].id)
    return names


def test_both_packages_have_the_same_modules() -> None:
    jax_only = {"gradients.py", "multisteps.py", "state.py"}  # JAX's functional core: TrainState, MultiSteps
    torch_modules = {p.name for p in (ROOT / "torchloop").glob("*.py")}
    jax_modules = {p.name for p in (ROOT / "flaxloop").glob("*.py")}
    assert jax_modules - torch_modules == jax_only and not torch_modules - jax_modules


@pytest.mark.parametrize("module", MODULES)
def test_module_pair_has_the_same_names_in_the_same_order(module: str) -> None:
    listed = {b: public_names(ROOT / f"{p}/{module}.py") for b, p in (("torch", "torchloop"), ("jax", "flaxloop"))}
    for backend, names in listed.items():
        declared = FRAMEWORK_ONLY[module][backend]
        missing = [name for name in declared if name not in names]
        assert not missing, f"{backend} {module}.py: declared framework-only but absent: {missing}"
    shared = {b: [n for n in names if n not in FRAMEWORK_ONLY[module][b]] for b, names in listed.items()}
    assert shared["torch"] == shared["jax"], (
        f"{module}.py drifted apart:\n torch: {shared['torch']}\n jax:   {shared['jax']}\n"
        "declare a name only one framework needs in FRAMEWORK_ONLY, with the reason"
    )
