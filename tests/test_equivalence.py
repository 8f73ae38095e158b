"""Building blocks, one at a time, in float64: each JAX piece against its torch reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from flaxloop import checkpoint as flax_checkpoint
from flaxloop import layers as flax_layers
from flaxloop import losses as flax_losses
from flaxloop import models as flax_models
from flaxloop.optim import make_optimizer as make_flax_optimizer
from loopspec.config import LossConfig, ModelConfig, OptimizerConfig
from loopspec.weights import canonical_init
from torchloop import layers as torch_layers
from torchloop import losses as torch_losses
from torchloop import models as torch_models
from torchloop.optim import make_optimizer as make_torch_optimizer

RTOL = 1e-12

OPTIMIZER_VARIANTS = [
    {"name": "sgd", "lr": 0.1},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-2},
    {"name": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
    {"name": "adam", "lr": 1e-2},
    {"name": "adam", "lr": 1e-2, "weight_decay": 1e-2, "betas": [0.8, 0.99], "eps": 1e-6},
    {"name": "adam", "lr": 1e-2, "amsgrad": True},
    {"name": "adamw", "lr": 1e-2},
    {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
    {"name": "rmsprop", "lr": 1e-2},
    {"name": "rmsprop", "lr": 1e-2, "centered": True, "momentum": 0.9, "weight_decay": 1e-2},
    {"name": "rmsprop", "lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5},
    {"name": "adagrad", "lr": 0.1},
    {
        "name": "adagrad",
        "lr": 0.1,
        "lr_decay": 0.01,
        "initial_accumulator_value": 0.5,
        "weight_decay": 1e-2,
        "eps": 1e-8,
    },
]


@pytest.mark.parametrize(
    "options", OPTIMIZER_VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "name") or "defaults"
)
def test_optimizer_update_matches_torch(options: dict) -> None:
    """40 updates from a fixed gradient stream; parameters compared after every step."""
    cfg = OptimizerConfig(**options)
    rng = np.random.default_rng(0)
    init = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=(3,))}
    grads = [{k: rng.normal(size=v.shape) * (1 + t % 4) for k, v in init.items()} for t in range(40)]

    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    torch_opt = make_torch_optimizer(cfg, list(torch_params.values()))
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in init.items()}
        tx = make_flax_optimizer(cfg)
        state = tx.init(params)
        update = jax.jit(tx.update)
        for t, grad in enumerate(grads):
            for k, p in torch_params.items():
                p.grad = torch.tensor(grad[k])
            torch_opt.step()
            updates, state = update({k: jnp.asarray(v) for k, v in grad.items()}, state, params)
            params = optax.apply_updates(params, updates)
            for k in init:
                expected = torch_params[k].detach().numpy()
                np.testing.assert_allclose(
                    np.asarray(params[k]), expected, rtol=RTOL, atol=1e-14, err_msg=f"{cfg.name} {k} after step {t + 1}"
                )


BINARY = {
    "bce": {"name": "bce"},
    "bce_pos_weight": {"name": "bce", "pos_weight": 2.5},
    "focal": {"name": "focal"},
    "focal_no_alpha": {"name": "focal", "alpha": None, "gamma": 1.5},
    "mse": {"name": "mse"},
    "l1": {"name": "l1"},
}
MULTICLASS = {
    "ce": {"name": "cross_entropy"},
    "ce_smoothing": {"name": "cross_entropy", "label_smoothing": 0.2},
    "ce_weighted_smoothing": {"name": "cross_entropy", "label_smoothing": 0.1, "class_weights": [0.2, 1.0, 3.0, 0.5]},
    "focal": {"name": "focal", "gamma": 2.0},
    "focal_weighted": {"name": "focal", "class_weights": [1.0, 2.0, 0.5, 1.0]},
    "mse": {"name": "mse"},
    "l1": {"name": "l1"},
}


@pytest.mark.parametrize("name", list(BINARY) + [f"multi-{k}" for k in MULTICLASS])
def test_loss_value_and_gradient_match_torch(name: str) -> None:
    multi = name.startswith("multi-")
    cfg = LossConfig(**(MULTICLASS[name[6:]] if multi else BINARY[name]))
    num_classes, out_dim = (4, 4) if multi else (2, 1)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(32, out_dim)) * 3
    labels = rng.integers(0, num_classes, size=32)

    torch_logits = torch.tensor(logits, requires_grad=True)
    torch_loss_fn = torch_losses.make_loss(cfg, num_classes, out_dim).to(torch.float64)
    torch_loss = torch_loss_fn(torch_logits, torch.tensor(labels))
    torch_loss.backward()
    with jax.enable_x64(True):
        jax_loss_fn = flax_losses.make_loss(cfg, num_classes, out_dim)
        value, grad = jax.value_and_grad(jax_loss_fn)(jnp.asarray(logits), jnp.asarray(labels))
        np.testing.assert_allclose(float(value), torch_loss.item(), rtol=RTOL)
        np.testing.assert_allclose(np.asarray(grad), torch_logits.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_batchnorm_running_statistics_follow_torch() -> None:
    """Unbiased running variance, torch's momentum convention, num_batches_tracked."""
    rng = np.random.default_rng(2)
    torch_bn = torch.nn.BatchNorm1d(6, momentum=0.2).double()
    flax_bn = flax_layers.BatchNorm(momentum=0.2, dtype=jnp.float64, param_dtype=jnp.float64)
    with jax.enable_x64(True):
        variables = flax_bn.init(jax.random.PRNGKey(0), jnp.zeros((4, 6)), train=True)
        for _ in range(3):
            x = rng.normal(size=(16, 6)) * 3 + 1
            expected = torch_bn(torch.tensor(x)).detach().numpy()
            got, updates = flax_bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
            variables = {"params": variables["params"], **updates}
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-13)
        stats = variables["batch_stats"]
        np.testing.assert_allclose(np.asarray(stats["var"]), torch_bn.running_var.numpy(), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(stats["mean"]), torch_bn.running_mean.numpy(), rtol=1e-13)
        assert int(stats["num_batches_tracked"]) == int(torch_bn.num_batches_tracked) == 3
        torch_bn.eval()
        x = rng.normal(size=(8, 6))
        got = flax_bn.apply(variables, jnp.asarray(x), train=False)
        np.testing.assert_allclose(np.asarray(got), torch_bn(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-13)


MODEL_CASES = {
    "mlp": (ModelConfig(name="mlp", hidden=[16, 8], dropout=0.25), (41,), 1),
    "fashion_mlp": (ModelConfig(name="fashion_mlp"), (1, 28, 28), 10),
    "cnn": (ModelConfig(name="cnn", channels=[4, 8, 8]), (3, 16, 16), 10),
    "cnn_with_bias_before_norm": (ModelConfig(name="cnn", channels=[4, 8, 8], bias_before_norm=True), (3, 16, 16), 10),
    "mlp_with_bias_before_norm": (
        ModelConfig(name="mlp", hidden=[16, 8], dropout=0.25, bias_before_norm=True),
        (41,),
        1,
    ),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_models_share_layout_and_forward(name: str) -> None:
    """Same state_dict names and shapes, read from each backend's own module; same outputs in train and
    eval mode (parity dropout masks given by layer) from the same weights."""
    cfg, input_shape, out_dim = MODEL_CASES[name]
    torch_model = torch_models.build_model(cfg, input_shape, out_dim).double()
    shapes = torch_models.model_tensors(torch_model)
    assert flax_models.weight_shapes(cfg, input_shape, out_dim) == shapes
    weights = canonical_init(shapes, seed=3)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    rng = np.random.default_rng(4)
    x = rng.normal(size=(8, *input_shape))
    layers = torch_layers.dropout_layers(torch_model, torch.zeros((2, *input_shape), dtype=torch.float64))
    masks = [rng.integers(0, 2, size=(8, *shape)) / 0.75 for _, shape, _, _ in layers]
    torch_model.train()
    with torch_layers.parity_masks([layer for *_, layer in layers], [torch.tensor(m) for m in masks]):
        train_out = torch_model(torch.tensor(x))
    torch_model.eval()
    eval_out = torch_model(torch.tensor(x))
    with jax.enable_x64(True):
        flax_model = flax_models.build_model(cfg, input_shape, out_dim, jnp.float64)
        # the structure only, as a run gets it (flaxloop.state): an eager init would compile each of
        # its random initialisers op by op (seconds each in float64), and the values are replaced
        template = jax.eval_shape(flax_model.init, jax.random.PRNGKey(0), jnp.zeros((2, *input_shape)))
        variables = flax_checkpoint.import_weights(dict(template), weights)
        fits = jax.tree.map(lambda given, declared: given.shape == declared.shape, variables, template)
        assert all(jax.tree.leaves(fits)), "torch's tensors fit the shapes the Flax module declares"
        found = flax_model.dropout_layers(variables, jnp.zeros((2, *input_shape)))
        assert [shape for _, shape, _ in found] == [shape for _, shape, _, _ in layers]
        keyed = {flax_models.path_key(path): jnp.asarray(m) for (path, _, _), m in zip(found, masks)}
        got_train, stats = flax_model.apply(variables, jnp.asarray(x), True, masks=keyed)
        # torch's train-mode forward updated its running statistics; eval with the same.
        trained = {"params": variables["params"], "batch_stats": stats}
        got_eval, _ = flax_model.apply(trained, jnp.asarray(x), False)
        np.testing.assert_allclose(np.asarray(got_train), train_out.detach().numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(np.asarray(got_eval), eval_out.detach().numpy(), rtol=1e-11, atol=1e-12)
        round_trip = flax_checkpoint.export_weights(variables)
        for key, value in weights.items():
            np.testing.assert_array_equal(round_trip[key], value)
        for key, value in flax_checkpoint.export_weights(trained).items():
            np.testing.assert_allclose(value, torch_model.state_dict()[key].numpy(), rtol=1e-12, atol=1e-14)
