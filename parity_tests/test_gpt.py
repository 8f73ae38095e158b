"""The gpt model (a character-level GPT, nanoGPT's recipe) on both backends.

- float64, 300 updates: the backends agree to 1e-10 with the head tied and untied, with parity
  dropout (embedding, attention, residual) and without (the fused attention kernels), with
  accumulation on both JAX paths, clipping, AdamW decaying matrices only and warm-up-cosine;
- the porting traps a Transformer brings are caught in float64: flax's tanh GELU, flax's LayerNorm
  eps 1e-6 and an attention scale by the model width (by the pair check, at their submodule), and
  decay on the LayerNorm weights (by the trajectories: after one update exactly those tensors part);
- a run resumes across frameworks from a checkpoint with two parameter groups, at 1e-10;
- the float32 verdict by the one-ulp envelope;
- both backends' models continue a prompt with the same text;
- the text dataset reads any UTF-8 file and refuses what it cannot use in one line.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loopspec import UserError, fit, load_run
from loopspec.comparison import compare_runs
from loopspec.config import config_from_dict
from loopspec.data import load_dataset
from loopspec.metrics import read_metrics
from parity_tests.selection import cases
from paritykit.harness import sensitivity_verdict
from paritykit.pairs import check_models
from paritykit.samples import sample_markdown

UPDATES = 300


def gpt_config(
    updates: int = UPDATES,
    tie: bool = True,
    dropout: float = 0.1,
    accumulation: str = "manual",
    precision: str = "fp64",
) -> dict[str, Any]:
    return {
        "seed": 5,
        "data": {
            "name": "text",
            "block_size": 24,
            "stride": 12,
            "batch_size": 16,
            "val_fraction": 0.1,
            "drop_last": True,  # one compiled step: the short last batch is tested elsewhere
        },
        "model": {
            "name": "gpt",
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 24,
            "dropout": dropout,
            "dropout_mode": "parity",
            "tie_weights": tie,
        },
        "loss": {"name": "cross_entropy", "label_smoothing": 0.05},
        "optimizer": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.1, "decay": "matrices"},
        "schedule": {"name": "warmup_cosine", "warmup": updates // 10, "eta_min": 1e-5},
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


VARIANTS = {
    "tied, parity dropout, manual accumulation": {"tie": True, "dropout": 0.1, "accumulation": "manual"},
    "untied, fused attention, optax.MultiSteps": {"tie": False, "dropout": 0.0, "accumulation": "multisteps"},
    "tied, parity dropout, optax.MultiSteps": {"tie": True, "dropout": 0.1, "accumulation": "multisteps"},
    "untied, parity dropout, manual accumulation": {"tie": False, "dropout": 0.1, "accumulation": "manual"},
}


@pytest.mark.parametrize("variant", cases(list(VARIANTS), lambda v: list(VARIANTS).index(v) == 0))
def test_gpt_agrees_in_float64_over_300_updates(variant: str, tmp_path: Path) -> None:
    options = VARIANTS[variant]
    torch_run = fit(gpt_config(tie=options["tie"], dropout=options["dropout"]), tmp_path / "torch", backend="torch")
    jax_run = fit(gpt_config(**options), tmp_path / "jax", backend="jax")
    report = compare_runs(torch_run.out_dir, jax_run.out_dir, 1e-10)
    print(report.render())
    assert report.agree, report.render()
    steps = read_metrics(torch_run.out_dir / "metrics.jsonl")["step"]
    assert len(steps) == UPDATES and any(step["clipped"] for step in steps)
    weights = torch_run.weights("final")
    assert ("lm_head.weight" in weights) != options["tie"], "a tied head is the token table, stored once"
    first, last = read_metrics(torch_run.out_dir / "metrics.jsonl")["epoch"][0], torch_run.summary
    assert last["val_loss"] < first["val_loss"] and "val_perplexity" in first
    assert math.isclose(first["val_perplexity"], math.exp(first["val_loss"]), rel_tol=1e-12)


# ------------------------------------------------------------------ the traps


def torch_gpt(config: dict[str, Any]) -> Any:
    from torchloop.models import gpt

    cfg = config_from_dict(config)
    dataset = load_dataset(cfg.data)
    return gpt(cfg.model, dataset.input_shape, dataset.num_classes)


def flax_gpt(config: dict[str, Any], **plant: Any) -> Any:
    import jax.numpy as jnp

    from flaxloop.models import GPT

    cfg = config_from_dict(config)
    dataset = load_dataset(cfg.data)
    m = cfg.model
    (block,) = dataset.input_shape
    return GPT(
        dataset.num_classes, block, m.n_layer, m.n_head, m.n_embd, m.dropout, m.bias, m.tie_weights,
        jnp.float64, jnp.float64, **plant,
    )  # fmt: skip


TRAPS = {  # flax's default or a classic slip -> the submodule the pair check must name first
    "GELU tanh": ({"approximate_gelu": True}, "transformer.h.0.mlp"),
    "LayerNorm eps 1e-6": ({"ln_eps": 1e-6}, "transformer.h.0.ln_1"),
    "attention scaled by the model width": ({"attention_scale": 1 / math.sqrt(24)}, "transformer.h.0.attn"),
}


# make test: GELU and the attention scale; a LayerNorm eps is also planted in a user pair there
# (parity_tests/test_user_models.py), so CI alone runs it here
@pytest.mark.parametrize("trap", cases(list(TRAPS), lambda trap: trap != "LayerNorm eps 1e-6"))
def test_a_transformer_trap_is_named_at_its_submodule(trap: str) -> None:
    plant, where = TRAPS[trap]
    config = gpt_config(dropout=0.0)
    as_pair = {key: value for key, value in config.items() if key != "model"}  # the modules given as a pair
    clean = check_models(as_pair, torch_gpt(config), flax_gpt(config), None, "", train=False)
    assert clean.first_difference is None, clean.render()
    report = check_models(as_pair, torch_gpt(config), flax_gpt(config, **plant), None, "", train=False)
    first = report.first_difference
    print(report.render())
    assert first is not None and first.name.startswith(where), report.render()


def test_decay_on_layernorm_weights_parts_exactly_those_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One update in float64 with the JAX mask also decaying LayerNorm weights (`scale`): those
    tensors, and only those, leave torch's by far more than 1e-10."""
    import jax

    from flaxloop import optim

    def planted(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda path, p: p.ndim >= 2 or path[-1].key == "scale", params)

    config = gpt_config(updates=1)
    config["optimizer"]["lr"] = 0.1  # one update's decay, lr * wd, well above the gradient's rounding
    torch_run = fit(config, tmp_path / "torch", backend="torch")
    monkeypatch.setattr(optim, "decayed_tensors", planted)
    jax_run = fit(config, tmp_path / "jax", backend="jax")
    torch_final, jax_final = torch_run.weights("final"), jax_run.weights("final")
    parted = {
        name
        for name, value in torch_final.items()
        if np.max(np.abs(value - jax_final[name])) > 1e-10 * max(1.0, np.max(np.abs(value)))
    }
    norms = {name for name in torch_final if "ln_" in name and name.endswith(".weight")}
    assert parted == norms, sorted(parted ^ norms)
    assert not compare_runs(torch_run.out_dir, jax_run.out_dir, 1e-10).agree


# ------------------------------------------------------------------ resume, float32, samples


@pytest.mark.parametrize("direction", cases(["torch to jax", "jax to torch"], lambda d: d == "torch to jax"))
def test_gpt_resumes_across_frameworks_with_two_parameter_groups(direction: str, tmp_path: Path) -> None:
    first, then = direction.split(" to ")
    config = gpt_config(updates=60)
    config["train"]["checkpoint"] = {"every_steps": 25, "keep_last": 10}
    whole = fit(config, tmp_path / "whole", backend=first)
    resumed = fit(config, tmp_path / "resumed", backend=then, resume=whole.out_dir / "checkpoints" / "step-00000025")
    report = compare_runs(whole.out_dir, resumed.out_dir, 1e-10)
    assert report.agree, report.render()
    assert resumed.summary["steps"] == 60


@pytest.mark.float32
@pytest.mark.full  # make test: the float32 verdict on the other models; profiles and CI run this
def test_gpt_float32_verdict_by_the_envelope(tmp_path: Path) -> None:
    raw = gpt_config(updates=30, precision="fp32")
    verdict = sensitivity_verdict(raw, tmp_path / "verdict", horizon=20)
    print(verdict.render())
    assert verdict.agree, verdict.render()
    assert any(check.quantity == "loss" and not check.exact for check in verdict.checks)


def test_both_backends_continue_a_prompt_with_the_same_text(tmp_path: Path) -> None:
    trained = fit(gpt_config(updates=60), tmp_path / "run", backend="torch")
    texts = {b: load_run(trained.out_dir, backend=b).generate("The loss ", 60) for b in ("torch", "jax")}
    assert texts["torch"] == texts["jax"] and texts["torch"].startswith("The loss ")
    assert len(texts["torch"]) == len("The loss ") + 60
    drawn = load_run(trained.out_dir).generate("The loss ", 60, temperature=0.8, seed=1)
    assert drawn != texts["torch"] and drawn == load_run(trained.out_dir).generate("The loss ", 60, 0.8, seed=1)
    with pytest.raises(UserError, match="not in this run's vocabulary"):
        load_run(trained.out_dir).generate("Ω", 5)
    shown = sample_markdown(trained.out_dir, "The loss ", 60)  # what docs/gpt.md shows
    drawn_at_seed_0 = load_run(trained.out_dir).generate("The loss ", 60, temperature=0.8, seed=0)
    assert texts["torch"] in shown and drawn_at_seed_0 in shown and "**torch**" in shown


# ------------------------------------------------------------------ the text dataset


def test_text_data_reads_a_utf8_file_and_labels_the_next_character(tmp_path: Path) -> None:
    path = tmp_path / "poem.txt"
    path.write_text("abcde" * 40 + "ÿ", encoding="utf-8")
    cfg = config_from_dict({"data": {"name": "text", "path": str(path), "block_size": 8, "stride": 3}})
    dataset = load_dataset(cfg.data)
    assert dataset.num_classes == 6 and dataset.preprocessing.vocab == "abcdeÿ"
    assert dataset.x_train.shape[1:] == (8,) and np.array_equal(dataset.x_train[:, 1:], dataset.y_train[:, :-1])
    assert np.array_equal(dataset.x_train[1, :3], [3, 4, 0])  # the second sample starts 3 characters on


BAD_TEXT = {
    "not UTF-8": (b"\xff\xfe\x00abc" * 20, {}, "not UTF-8"),
    "too short for the block": (b"abc" * 10, {"block_size": 64}, "fewer than data.block_size"),
}


@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_text_data_that_cannot_be_used_is_one_line(case: str, tmp_path: Path) -> None:
    content, options, words = BAD_TEXT[case]
    (tmp_path / "t.txt").write_bytes(content)
    config = copy.deepcopy(gpt_config(updates=2))
    config["data"].update(path=str(tmp_path / "t.txt"), **options)
    with pytest.raises(UserError) as caught:
        fit(config, tmp_path / "run", backend="torch")
    assert "\n" not in str(caught.value) and words in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_gpt_refuses_features_in_one_line(tmp_path: Path) -> None:
    config = gpt_config(updates=2)
    config["data"] = {"name": "intrusion", "num_samples": 200}
    with pytest.raises(UserError, match="model gpt needs token ids|takes token ids"):
        fit(config, tmp_path / "run", backend="jax")
    assert not (tmp_path / "run").exists()
