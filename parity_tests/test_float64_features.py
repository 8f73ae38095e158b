"""Float64 parity of the loop's features beyond the matrix: framework init through --init,
early stopping with restored weights, unshuffled batches with a short last batch."""

from __future__ import annotations

import numpy as np
import torch

from loopspec.comparison import compare_runs
from loopspec.config import config_from_dict
from loopspec.data import load_dataset
from loopspec.weights import load_weights
from parity_tests.matrix import parity_config
from paritykit.harness import run_backends, run_both, summary
from torchloop.losses import make_loss
from torchloop.models import build_model


def test_jax_reproduces_torch_framework_init_through_init_file(tmp_path) -> None:
    """torch initialises itself (model.init: framework); JAX starts from its init.safetensors."""
    raw = parity_config("cnn", "adam", "cross_entropy", steps=120)
    raw["model"]["init"] = "framework"
    torch_run = run_backends(raw, tmp_path, backends=("torch",))["torch"]
    jax_run = run_backends(raw, tmp_path, backends=("jax",), init=torch_run / "init.safetensors")["jax"]
    report = compare_runs(torch_run, jax_run, 1e-10)
    assert report.agree, "\n" + report.render()


def test_early_stopping_stops_and_restores_the_same_epoch(tmp_path) -> None:
    # SGD: Adam-family optimizers turn the rounding noise on biases feeding BatchNorm into
    # drift over long runs (see compare.py); this test is about stopping, not optimizers.
    raw = parity_config("mlp", "sgd", "focal", steps=10_000)
    raw["train"].update(epochs=60, early_stopping={"enabled": True, "monitor": "val_loss", "patience": 3})
    report = run_both(raw, tmp_path)
    assert report.agree, "\n" + report.render()
    torch_summary, jax_summary = summary(tmp_path / "torch"), summary(tmp_path / "jax")
    assert torch_summary["stopped_early"] and jax_summary["stopped_early"]
    assert torch_summary["epochs"] < 60
    assert torch_summary["best_epoch"] == jax_summary["best_epoch"] < torch_summary["epochs"]
    assert torch_summary["restored_best"] and jax_summary["restored_best"]
    # The saved weights are the best epoch's: evaluating them reproduces that epoch's val_loss
    # (the JAX run saved the same weights: the comparison above covers final.safetensors).
    config = config_from_dict(raw)
    data = load_dataset(config.data)
    model = build_model(config.model, data.input_shape, 1).double()
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in load_weights(tmp_path / "torch" / "final.safetensors").items()}
    )
    loss_fn = make_loss(config.loss, 2, 1).double()
    with torch.no_grad():  # the whole validation split is one eval batch (eval_batch_size 4096)
        val_loss = loss_fn(model.eval()(torch.from_numpy(data.x_val)), torch.from_numpy(data.y_val)).item()
    np.testing.assert_allclose(val_loss, torch_summary["best_value"], rtol=1e-12)
    assert val_loss > 0 and torch_summary["val_loss"] == torch_summary["best_value"]


def test_unshuffled_batches_with_short_last_batch_agree(tmp_path) -> None:
    raw = parity_config("cnn", "sgd", "focal", steps=150)
    raw["data"].update(shuffle=False, drop_last=False, batch_size=50, eval_batch_size=100)
    report = run_both(raw, tmp_path)
    assert report.agree, "\n" + report.render()


def test_final_weights_load_into_a_plain_torch_module(tmp_path) -> None:
    """final.safetensors from the JAX run is a torch state_dict: load_state_dict accepts it."""
    raw = parity_config("cnn", "adamw", "cross_entropy", steps=30)
    runs = run_backends(raw, tmp_path, backends=("jax",))
    config = config_from_dict(raw)
    model = build_model(config.model, (1, 8, 8), 10).double()
    tensors = load_weights(runs["jax"] / "final.safetensors")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    assert int(model.features[0].norm.num_batches_tracked) == 30
    assert np.isfinite(model(torch.zeros(2, 1, 8, 8, dtype=torch.float64)).detach().numpy()).all()
