"""Bring your own models: four model pairs that are not built-in models (parity_tests/pairs.py), one
of them in flax.nnx, trained through the same seam as the built-ins.

- each in float64 for 200 updates with AdamW, warm-up-cosine, clipping and accumulation (both JAX
  paths) agrees with its torch twin to 1e-10, after the pair check found every submodule equal;
- one planted porting mistake at a time is named by the pair check at the right submodule;
- the float32 verdict of a pair uses the one-ulp envelope;
- a pair resumes across frameworks and trains with 2 data-parallel replicas, at 1e-10;
- load_run rebuilds a pair's model from its import string; predict and evaluate work on it;
- what cannot be a pair is refused in one line, with nothing written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loopspec import UserError, fit, load_run
from loopspec.comparison import compare_runs
from loopspec.metrics import read_metrics
from parity_tests import pairs
from parity_tests.command_line import refusal, run_process
from parity_tests.selection import cases
from paritykit.harness import sensitivity_verdict
from paritykit.pairs import check_models

RNG_SEED = 11


def arrays(kind: str, rows: int = 200) -> dict[str, np.ndarray]:
    """Learnable generated data shaped for each pair."""
    rng = np.random.default_rng(RNG_SEED)
    if kind == "tabular":
        x = rng.normal(size=(rows, 41))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    elif kind == "tokens":
        x = rng.integers(0, 16, size=(rows, 12))
        y = (x[:, -1] > 7).astype(np.int64)
    elif kind == "signals":
        x = rng.normal(size=(rows, 2, 16))
        y = ((x[:, 0].mean(1) > 0).astype(np.int64) + (x[:, 1].mean(1) > 0)).astype(np.int64)
    else:
        x = rng.normal(size=(rows, 1, 8, 8))
        y = (np.abs(x[:, 0, :4].mean((1, 2))) * 40).astype(np.int64) % 10
    split = int(rows * 0.8)
    return {"x_train": x[:split], "y_train": y[:split], "x_val": x[split:], "y_val": y[split:]}


# name -> (torch factory, flax factory, data kind, kwargs)
PAIRS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "residual MLP, LayerNorm, GELU (linen)": (
        "parity_tests.pairs:residual_mlp",
        "parity_tests.pairs:linen_residual_mlp",
        "tabular",
        {"features": 41},
    ),
    "causal Transformer over token ids (nnx)": (
        "parity_tests.pairs:tiny_transformer",
        "parity_tests.pairs:nnx_tiny_transformer",
        "tokens",
        {},
    ),
    "1-D conv net (linen)": ("parity_tests.pairs:conv_net_1d", "parity_tests.pairs:linen_conv_net_1d", "signals", {}),
    "CNN with BatchNorm and parity dropout (nnx)": (
        "parity_tests.pairs:batchnorm_dropout_cnn",
        "parity_tests.pairs:nnx_batchnorm_dropout_cnn",
        "images",
        {},
    ),
}


def pair_config(name: str, updates: int = 200, accumulation: str = "manual", precision: str = "fp64") -> dict:
    """AdamW, warm-up-cosine (a tenth of the run), clipping, 2-micro-batch accumulation, parity dropout."""
    torch_factory, flax_factory, _, kwargs = PAIRS[name]
    return {
        "seed": 3,
        "data": {"batch_size": 16, "drop_last": True},  # one compiled step: the short last batch is tested elsewhere
        "model": {
            "name": "custom",
            "torch": torch_factory,
            "flax": flax_factory,
            "kwargs": kwargs,
            "dropout_mode": "parity",
        },
        "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "schedule": {"name": "warmup_cosine", "warmup": max(1, updates // 10), "eta_min": 1e-5},
        "train": {
            "epochs": 1000,
            "max_steps": updates,
            "precision": precision,
            "clip_grad_norm": 0.5,
            "accumulation_steps": 2,
            "accumulation": accumulation,
            "log_every": 0,
            "verbose": 0,
        },
    }


MAKE_TEST_PAIRS = {"residual MLP, LayerNorm, GELU (linen)", "causal Transformer over token ids (nnx)"}


@pytest.mark.parametrize(
    "name",  # make test: one linen pair and one nnx pair; the 1-D conv net's traps are planted below
    cases(list(PAIRS), lambda name: name in MAKE_TEST_PAIRS),
)
def test_a_user_pair_agrees_in_float64_over_200_updates(name: str, tmp_path: Path) -> None:
    torch_factory, flax_factory, kind, _ = PAIRS[name]
    config = pair_config(name)
    report = check_models(config, torch_factory, flax_factory, arrays(kind), tmp_path)
    print(report.render())
    assert report.first_difference is None, report.render()
    assert report.training is not None and report.training.agree, report.render()
    steps = read_metrics(report.runs["torch"] / "metrics.jsonl")["step"]
    assert len(steps) == 200 and any(step["clipped"] for step in steps)
    assert len({step["lr"] for step in steps}) > 100, "warm-up-cosine moves the rate"


@pytest.mark.parametrize("name", cases(list(PAIRS), lambda name: name == "causal Transformer over token ids (nnx)"))
def test_a_user_pair_agrees_under_optax_multisteps(name: str, tmp_path: Path) -> None:
    torch_factory, flax_factory, kind, _ = PAIRS[name]
    data = arrays(kind)
    torch_run = fit(pair_config(name, 100), tmp_path / "torch", backend="torch", data=data)
    config = pair_config(name, 100, accumulation="multisteps")
    jax_run = fit(config, tmp_path / "jax", backend="jax", data=data, init=torch_run)
    report = compare_runs(torch_run.out_dir, jax_run.out_dir, 1e-10)
    assert report.agree, report.render()


PLANTS = {  # the mistake -> (pair, where the pair check must point)
    "layernorm eps": ("residual MLP, LayerNorm, GELU (linen)", "blocks.0.norm"),
    "gelu tanh": ("residual MLP, LayerNorm, GELU (linen)", "blocks.0.proj"),
    "attention scale": ("causal Transformer over token ids (nnx)", "blocks.0.attn"),
    "same padding": ("1-D conv net (linen)", "conv1"),
    "flatten order": ("1-D conv net (linen)", "head"),
    "batchnorm momentum": ("CNN with BatchNorm and parity dropout (nnx)", "norm.running_mean"),
}


# make test: a plant in three of the four pairs (the LayerNorm eps among them); GELU tanh and the attention
# scale are also planted in the built-in Transformer (parity_tests/test_gpt.py), so CI alone runs them here
@pytest.mark.parametrize("plant", cases(list(PLANTS), lambda plant: plant not in {"gelu tanh", "attention scale"}))
def test_a_planted_mistake_is_named_at_its_submodule(plant: str) -> None:
    name, where = PLANTS[plant]
    torch_factory, flax_factory, kind, kwargs = PAIRS[name]
    config = pair_config(name)
    config["model"]["kwargs"] = {**kwargs, "plant": plant}
    report = check_models(config, torch_factory, flax_factory, arrays(kind), "", train=False)
    first = report.first_difference
    assert first is not None and first.name.startswith(where), report.render()
    assert not report.agree


def test_a_user_pair_gets_the_float32_verdict_by_the_envelope(tmp_path: Path) -> None:
    name = "residual MLP, LayerNorm, GELU (linen)"
    np.savez(tmp_path / "data.npz", **arrays("tabular"))
    raw = pair_config(name, 30, precision="fp32")
    raw["data"] = {"name": "arrays", "path": str(tmp_path / "data.npz"), "batch_size": 16}
    verdict = sensitivity_verdict(raw, tmp_path / "verdict", horizon=20)
    print(verdict.render())
    assert verdict.agree, verdict.render()
    assert any(check.quantity == "loss" and not check.exact for check in verdict.checks)


def test_a_user_pair_resumes_across_frameworks(tmp_path: Path) -> None:
    name = "CNN with BatchNorm and parity dropout (nnx)"
    data = arrays("images")
    config = pair_config(name, 60)
    config["train"]["checkpoint"] = {"every_steps": 25, "keep_last": 10}
    whole = fit(config, tmp_path / "torch", backend="torch", data=data)
    resumed = fit(
        config,
        tmp_path / "jax-from-torch",
        backend="jax",
        data=data,
        resume=whole.out_dir / "checkpoints" / "step-00000025",
    )
    report = compare_runs(whole.out_dir, resumed.out_dir, 1e-10)
    assert report.agree, report.render()
    assert resumed.summary["backend"] == "jax" and resumed.summary["steps"] == 60


@pytest.mark.full  # make test: data parallelism with the built-in models, through the same seam
def test_a_user_pair_trains_with_two_data_parallel_replicas(tmp_path: Path) -> None:
    """torch DDP under torchrun against JAX over two host devices, the pair from import strings."""
    name = "residual MLP, LayerNorm, GELU (linen)"
    np.savez(tmp_path / "data.npz", **arrays("tabular"))
    raw = pair_config(name, 40)
    raw["data"] = {"name": "arrays", "path": str(tmp_path / "data.npz"), "batch_size": 16}
    torch_run = run_process("torch", raw, tmp_path / "torch", 2)
    jax_run = run_process("jax", raw, tmp_path / "jax", 2, "--init", str(torch_run / "init.safetensors"))
    report = compare_runs(torch_run, jax_run, 1e-10)
    assert report.agree, report.render()
    assert len(read_metrics(torch_run / "metrics.jsonl")["step"]) == 40


def test_load_run_rebuilds_a_pair_from_its_import_string(tmp_path: Path) -> None:
    name = "causal Transformer over token ids (nnx)"
    data = arrays("tokens")
    trained = fit(pair_config(name, 20), tmp_path / "run", backend="torch", data=data)
    for backend in ("torch", "jax"):
        run = load_run(trained.out_dir, backend=backend)
        logits = run.predict(data["x_val"], preprocessed=True)
        assert logits.shape == (len(data["y_val"]), 2)
        accuracy = run.evaluate(data["x_val"], data["y_val"], preprocessed=True)["val_acc"]
        assert accuracy == trained.summary["val_acc"], backend


# ------------------------------------------------------------------ what cannot be a pair


class NotAModule:
    pass


def raising_factory() -> Any:
    import torch

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(41, 2)

        def forward(self, x: Any) -> Any:
            raise RuntimeError("shapes do not line up")

    return Broken()


def nan_factory() -> Any:
    import torch

    class NaNs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(41, 2)

        def forward(self, x: Any) -> Any:
            return self.linear(x) * float("nan")

    return NaNs()


def wide_factory() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(41, 5))


def no_train_factory() -> Any:
    from flax import linen as nn

    class NoTrain(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            return nn.Dense(2)(x)

    return NoTrain()


def renamed_factory(**kwargs: Any) -> Any:
    from flax import linen as nn

    class Renamed(nn.Module):
        @nn.compact
        def __call__(self, x: Any, train: bool = False) -> Any:
            return nn.Dense(2, name="output")(nn.Dense(16, name="hidden")(x))

    return Renamed()


BAD = {
    "an object that is not a module": (
        NotAModule(),
        "parity_tests.pairs:linen_residual_mlp",
        "must be a torch.nn.Module",
    ),
    "an import string that fails": ("parity_tests.nowhere:model", "parity_tests.pairs:linen_residual_mlp", "importing"),
    "a forward that raises": (raising_factory(), "parity_tests.pairs:linen_residual_mlp", "forward raised"),
    "an output width that does not fit": (wide_factory(), "parity_tests.pairs:linen_residual_mlp", "need (N, ..., 2)"),
    "a flax module without train": ("parity_tests.pairs:residual_mlp", no_train_factory(), "must take `train`"),
    "non-finite outputs at start-up": (nan_factory(), "parity_tests.pairs:linen_residual_mlp", "NaN/inf"),
    "a name map that does not cover the model": (
        "parity_tests.pairs:residual_mlp",
        renamed_factory(),
        "do not match tensor for tensor",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_what_cannot_be_a_pair_is_one_line_with_nothing_written(case: str, tmp_path: Path) -> None:
    torch_model, flax_model, words = BAD[case]
    config = pair_config("residual MLP, LayerNorm, GELU (linen)", 10)
    with pytest.raises(UserError) as caught:
        check_models(config, torch_model, flax_model, arrays("tabular"), tmp_path / "pair")
    assert "\n" not in str(caught.value) and words in str(caught.value), str(caught.value)
    assert not (tmp_path / "pair").exists()


def test_a_bad_model_on_the_command_line_is_exit_2(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """The command line in this process: the refusal comes before anything trains (the subprocess path
    of a command-line error is tests/test_cli.py's)."""
    np.savez(tmp_path / "data.npz", **arrays("tabular"))
    for backend, model in (("torch", "parity_tests.nowhere:model"), ("jax", "parity_tests.pairs:residual_mlp")):
        argv = ["--model", model, "--out", str(tmp_path / backend), "--set", "data.name=arrays"]
        refusal(capfd, backend, *argv, "--set", f"data.path={tmp_path}/data.npz", "--config", "intrusion_mlp_focal")
        assert not (tmp_path / backend).exists()


def test_both_backends_run_a_pair_from_fit_with_module_objects(tmp_path: Path) -> None:
    """fit(model=<module>): the objects themselves; JAX from the torch run's initial weights."""
    data = arrays("signals")
    config = pair_config("1-D conv net (linen)", 12)
    torch_run = fit(config, tmp_path / "torch", backend="torch", model=pairs.conv_net_1d(), data=data)
    jax_run = fit(config, tmp_path / "jax", backend="jax", model=pairs.linen_conv_net_1d(), data=data, init=torch_run)
    assert compare_runs(torch_run.out_dir, jax_run.out_dir, 1e-10).agree
    refused = copy.deepcopy(config)
    with pytest.raises(UserError, match="needs model.flax|starts from given weights"):
        fit(refused, tmp_path / "jax-no-init", backend="jax", model=pairs.linen_conv_net_1d(), data=data)


def test_a_loss_pair_is_checked_and_trains_both_sides(tmp_path: Path) -> None:
    """loss=(torch_fn, jax_fn): a label-smoothed cross-entropy written by hand on each side."""
    import jax
    import jax.numpy as jnp
    import torch

    def torch_loss(logits: Any, labels: Any) -> Any:
        return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)

    def jax_loss(logits: Any, labels: Any) -> Any:
        targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype) * 0.8 + 0.2 / logits.shape[-1]
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))

    name = "1-D conv net (linen)"
    torch_factory, flax_factory, kind, _ = PAIRS[name]
    report = check_models(
        pair_config(name, 40), torch_factory, flax_factory, arrays(kind), tmp_path, loss=(torch_loss, jax_loss)
    )
    assert report.agree, report.render()
    assert any(q.stage == "loss" and q.name == "the loss pair" for q in report.quantities)
    wrong = (torch_loss, lambda logits, labels: jax_loss(logits, labels) * 1.01)
    planted = check_models(
        pair_config(name, 40), torch_factory, flax_factory, arrays(kind), "", loss=wrong, train=False
    )
    assert planted.first_difference.stage == "loss"
