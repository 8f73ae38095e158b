"""The divergence locator against planted bugs: each trap is planted on the JAX side (a test-only
monkeypatch of the JAX code, never a config option), both runs are trained, and `locate` must name
the right update, the right first quantity, and the trap. Clean pairs and a one-ulp perturbation
report no divergence.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import flaxloop.layers
import flaxloop.losses
import flaxloop.models
import flaxloop.optim
import flaxloop.precision
import flaxloop.schedules
from loopspec import UserError, fit
from loopspec.weights import load_weights, save_weights
from parity_tests.selection import FULL
from paritykit.harness import precision_unavailable
from paritykit.locate import locate
from paritykit.locate import main as locate_main


def mlp_config(updates_per_epoch_rows: int = 600, epochs: int = 3, **train: Any) -> dict[str, Any]:
    return {
        "seed": 0,
        "data": {"name": "intrusion", "num_samples": updates_per_epoch_rows, "batch_size": 32},
        "model": {"name": "mlp", "hidden": [16, 8], "dropout": 0.1, "dropout_mode": "parity"},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": epochs, "precision": "fp64", "verbose": 0, "log_every": 0, **train},
    }


def gpt_config() -> dict[str, Any]:
    return {
        "seed": 1,
        "data": {"name": "text", "block_size": 16, "stride": 16, "batch_size": 16},
        "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"epochs": 1, "max_steps": 8, "precision": "fp64", "verbose": 0, "log_every": 0},
    }


def pair_config(plant: str) -> dict[str, Any]:
    """A user's pair from import strings (parity_tests/pairs.py); `plant` reaches only the flax side."""
    config = mlp_config()
    config["model"] = {
        "name": "custom",
        "torch": "parity_tests.pairs:residual_mlp",
        "flax": "parity_tests.pairs:linen_residual_mlp",
        "kwargs": {"features": 41, "plant": plant},
        "dropout_mode": "parity",
    }
    return config


def conv_pair_config(plant: str) -> dict[str, Any]:
    """The 1-D conv net pair over (N, C, L) signals, data as an .npz the replays reload."""
    config = pair_config(plant)
    config["model"].update(torch="parity_tests.pairs:conv_net_1d", flax="parity_tests.pairs:linen_conv_net_1d")
    config["model"]["kwargs"] = {"plant": plant}
    config["data"] = {"name": "arrays", "path": str(signals_file()), "batch_size": 16}
    config["loss"] = {"name": "cross_entropy"}
    return config


def signals_file() -> Path:
    path = Path(tempfile.gettempdir()) / "parity-locate-signals.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(240, 2, 16))
        y = (np.abs(x[:, 0, :6].mean(1)) * 6).astype(np.int64) % 3
        np.savez(path, x_train=x[:192], y_train=y[:192], x_val=x[192:], y_val=y[192:])
    return path


def both(config: dict[str, Any], root: Path, plant: Callable[[Any], None], monkeypatch: pytest.MonkeyPatch) -> Any:
    """torch as shipped, JAX with the plant; then the locator, the plant still in place (its replays
    run the same JAX code the run did)."""
    torch_run = fit(config, root / "torch", backend="torch")
    with monkeypatch.context() as patched:
        plant(patched)
        fit(config, root / "jax", backend="jax", init=torch_run.out_dir / "init.safetensors")
        location = locate(root / "torch", root / "jax", work_dir=root / "replays")
    print(location.render())
    return location


def shifted_lookup(table: np.ndarray) -> Any:
    values = jnp.asarray(table)
    return lambda count: values[jnp.clip(count - 1, 0, len(table) - 1)]


PLANTS: dict[str, tuple[Callable[[], dict], Callable[[Any], None], int, str, str]] = {
    # name: (config, plant, update, first quantity's stage, words of the diagnosis)
    "schedule off by one, at update 121": (
        lambda: (
            mlp_config(1500, 4, precision="fp64")
            | {"schedule": {"name": "step", "interval": "step", "step_size": 120, "gamma": 0.5}}
        ),
        lambda patched: patched.setattr(flaxloop.schedules, "lookup", shifted_lookup),
        121,
        "update",
        "schedule off by one",
    ),
    "BatchNorm biased running variance": (
        lambda: mlp_config(),
        lambda patched: patched.setattr(flaxloop.layers, "running_variance", lambda variance, count: variance),
        1,
        "buffer",
        "biased batch variance",
    ),
    "BatchNorm momentum 0.9 for 0.1": (
        lambda: mlp_config(),
        lambda patched: patched.setattr(flaxloop.layers, "normalise", momentum_swapped(flaxloop.layers.normalise)),
        1,
        "buffer",
        "BatchNorm momentum",
    ),
    "Adam eps inside the root": (
        lambda: mlp_config(),
        lambda patched: patched.setattr(
            flaxloop.optim, "adam_denominator", lambda nu, bias2_sqrt, eps: jnp.sqrt(nu / bias2_sqrt**2 + eps)
        ),
        1,  # records first differ at step 2 (a loss is measured before its update): the update before parts
        "update",
        "eps inside the square root",
    ),
    "label smoothing applied twice": (
        lambda: mlp_config() | {"loss": {"name": "cross_entropy", "label_smoothing": 0.1}},
        lambda patched: patched.setattr(optax, "smooth_labels", smoothing_twice(optax.smooth_labels)),
        1,
        "loss",
        "label smoothing applied twice",
    ),
    "focal alpha swapped": (
        lambda: mlp_config() | {"loss": {"name": "focal", "alpha": 0.25}},
        lambda patched: patched.setattr(
            flaxloop.losses, "sigmoid_focal_loss", alpha_swapped(flaxloop.losses.sigmoid_focal_loss)
        ),
        1,
        "loss",
        "focal alpha swapped",
    ),
    "cycled momentum off by one": (
        lambda: mlp_config() | {"schedule": {"name": "onecycle", "max_lr": 0.01}},
        lambda patched: patched.setattr(flaxloop.schedules, "lookup", shifted_lookup),
        2,
        "optimizer slot",  # beta1 is the cycled momentum: exp_avg parts before the update
        "cycled momentum off by one",
    ),
    "loss scale grown one update late, at update 101": (
        lambda: mlp_config(1500, 4, precision="fp16", loss_scale={"init_scale": 256.0, "growth_interval": 100}),
        lambda patched: patched.setattr(flaxloop.precision.LossScale, "update", grown_late),
        101,  # the first update run at the grown scale
        "hyper-parameter",
        "loss scale grown or backed off one update off",
    ),
    "BatchNorm biased running variance from update 101": (
        lambda: mlp_config(1500, 4),
        lambda patched: patched.setattr(flaxloop.layers, "normalise", biased_after(flaxloop.layers.normalise, 100)),
        101,
        "buffer",
        "biased batch variance",
    ),
    "GELU tanh in a user's pair (linen)": (
        lambda: pair_config("gelu tanh"),
        lambda patched: None,  # planted through the pair's own factory argument
        1,
        "forward",
        "tanh approximation",
    ),
    "flatten order in a user's pair (linen conv net)": (
        lambda: conv_pair_config("flatten order"),
        lambda patched: None,
        1,
        "forward",
        "flatten order",
    ),
    "'SAME' padding in a user's pair (linen conv net)": (
        lambda: conv_pair_config("same padding"),
        lambda patched: None,
        1,
        "forward",
        "'SAME' padding",
    ),
    "Adam eps inside the root, float32 runs": (
        lambda: mlp_config(precision="fp32"),
        lambda patched: patched.setattr(
            flaxloop.optim, "adam_denominator", lambda nu, bias2_sqrt, eps: jnp.sqrt(nu / bias2_sqrt**2 + eps)
        ),
        1,
        "update",
        "eps inside the square root",
    ),
    "LayerNorm eps 1e-6, float32 runs": (
        lambda: gpt_config() | {"train": {**gpt_config()["train"], "precision": "fp32"}},
        lambda patched: patched.setattr(flaxloop.models, "layer_norm", eps_of(flaxloop.models.layer_norm, 1e-6)),
        1,
        "forward",
        "LayerNorm eps",
    ),
    "GELU tanh in a Transformer": (
        gpt_config,
        lambda patched: patched.setattr(nn, "gelu", lambda x, approximate=False: jax.nn.gelu(x, approximate=True)),
        1,
        "forward",
        "tanh approximation",
    ),
    "LayerNorm eps 1e-6 in a Transformer": (
        gpt_config,
        lambda patched: patched.setattr(flaxloop.models, "layer_norm", eps_of(flaxloop.models.layer_norm, 1e-6)),
        1,
        "forward",
        "LayerNorm eps",
    ),
}


def grown_late(self: Any, found_inf: Any) -> Any:
    """GradScaler's growth one finite update after growth_interval."""
    successful = self.growth_tracker + 1
    grow = successful == self.growth_interval + 1
    grown = self.scale * jnp.float32(self.growth_factor)
    scale = jnp.where(found_inf, self.scale * jnp.float32(self.backoff_factor), jnp.where(grow, grown, self.scale))
    tracker = jnp.where(found_inf | grow, 0, successful)
    return self.replace(scale=scale, growth_tracker=tracker.astype(jnp.int32))


def biased_after(normalise: Callable, updates: int) -> Callable:
    """The running variance turns biased once `updates` batches have been tracked."""

    def planted(x, train, scale, bias, running, momentum, epsilon):  # noqa: ANN001, ANN202
        out, updated = normalise(x, train, scale, bias, running, momentum, epsilon)
        if not train:
            return out, updated
        mean, var, tracked = updated
        n = x.size // x.shape[-1]
        old = running[1]
        biased = (1 - momentum) * old + (var - (1 - momentum) * old) * (n - 1) / n
        return out, (mean, jnp.where(tracked > updates, biased, var), tracked)

    return planted


def momentum_swapped(normalise: Callable) -> Callable:
    def planted(x, train, scale, bias, running, momentum, epsilon):  # noqa: ANN001, ANN202
        return normalise(x, train, scale, bias, running, 1 - momentum, epsilon)

    return planted


def smoothing_twice(smooth: Callable) -> Callable:
    return lambda labels, alpha: smooth(smooth(labels, alpha), alpha)


def alpha_swapped(focal: Callable) -> Callable:
    return lambda logits, targets, alpha, gamma: focal(logits, targets, None if alpha is None else 1 - alpha, gamma)


def eps_of(layer_norm: Callable, eps: float) -> Callable:
    return lambda _eps, *args: layer_norm(eps, *args)


FAST = {"Adam eps inside the root"}


@pytest.mark.parametrize("plant", [pytest.param(name, marks=() if name in FAST else FULL) for name in PLANTS])
def test_a_planted_trap_is_located_and_diagnosed(plant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, apply, update, stage, words = PLANTS[plant]
    if config()["train"]["precision"] == "fp16" and any(precision_unavailable(b, "fp16") for b in ("torch", "jax")):
        pytest.skip(precision_unavailable("jax", "fp16") or precision_unavailable("torch", "fp16"))
    location = both(config(), tmp_path, apply, monkeypatch)
    assert location.update == update, location.render()
    assert location.first is not None and location.first.stage == stage, location.render()
    assert any(words in d for d in location.diagnoses), location.render()


def test_a_clean_pair_reports_no_divergence(tmp_path: Path) -> None:
    config = mlp_config(epochs=2)
    for backend in ("torch", "jax"):
        fit(config, tmp_path / backend, backend=backend)
    location = locate(tmp_path / "torch", tmp_path / "jax")
    assert location.agree and location.update is None, location.render()
    assert locate_main([str(tmp_path / "torch"), str(tmp_path / "jax")]) == 0


@pytest.mark.full
def test_a_one_ulp_perturbation_in_float32_reports_no_divergence(tmp_path: Path) -> None:
    config = mlp_config(epochs=2, precision="fp32")
    first = fit(config, tmp_path / "torch", backend="torch")
    weights = load_weights(first.out_dir / "init.safetensors")
    nudged = {k: np.nextafter(v, np.inf).astype(v.dtype) if v.dtype == np.float32 else v for k, v in weights.items()}
    save_weights(tmp_path / "nudged.safetensors", nudged)
    fit(config, tmp_path / "jax", backend="jax", init=tmp_path / "nudged.safetensors")
    location = locate(tmp_path / "torch", tmp_path / "jax")
    assert location.agree, location.render()


def test_runs_of_different_configs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(mlp_config(epochs=1), tmp_path / "a", backend="torch")
    other = mlp_config(epochs=1)
    other["optimizer"]["lr"] = 1e-2
    fit(other, tmp_path / "b", backend="jax")
    with pytest.raises(UserError, match="different configs"):
        locate(tmp_path / "a", tmp_path / "b")
    assert locate_main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
