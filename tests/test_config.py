"""Config loading, overrides and the one-line errors users get for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopspec.config import (
    Config,
    config_from_dict,
    load_config,
    resolved_eps,
    resolved_weight_decay,
)
from loopspec.errors import ConfigError

CONFIGS = sorted(Path("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_yaml_and_toml_give_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("optimizer:\n  name: sgd\n  lr: 1e-2\n  momentum: 0.9\nmodel:\n  hidden: [8, 4]\n")
    (tmp_path / "a.toml").write_text('[optimizer]\nname = "sgd"\nlr = 1e-2\nmomentum = 0.9\n[model]\nhidden = [8, 4]\n')
    assert load_config(tmp_path / "a.yaml") == load_config(tmp_path / "a.toml")
    assert load_config(tmp_path / "a.yaml").optimizer.lr == 0.01  # YAML's "1e-2" string read as a number


def test_overrides_reach_nested_keys_and_parse_values(tmp_path: Path) -> None:
    config = load_config(
        "configs/intrusion_mlp_focal.yaml",
        [
            "optimizer.lr=3e-4",
            "model.hidden=[64, 32]",
            "train.early_stopping.patience=9",
            "data.shuffle=false",
            "loss.alpha=null",
        ],
    )
    assert config.optimizer.lr == 3e-4
    assert config.model.hidden == [64, 32]
    assert config.train.early_stopping.patience == 9
    assert config.data.shuffle is False
    assert config.loss.alpha is None


def test_resolved_config_round_trips_through_json(tmp_path: Path) -> None:
    import json

    config = load_config("configs/digits_cnn.yaml", ["optimizer.lr=0.01"])
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert load_config(tmp_path / "config.json") == config


def test_torch_defaults_fill_unset_optimizer_options() -> None:
    adamw = config_from_dict({"optimizer": {"name": "adamw"}}).optimizer
    adam = config_from_dict({"optimizer": {"name": "adam"}}).optimizer
    adagrad = config_from_dict({"optimizer": {"name": "adagrad"}}).optimizer
    assert resolved_weight_decay(adamw) == 1e-2 and resolved_weight_decay(adam) == 0.0
    assert resolved_eps(adam) == 1e-8 and resolved_eps(adagrad) == 1e-10


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"optimizer": {"lrr": 0.1}}, "unknown key optimizer.lrr; allowed keys in optimizer: name, lr,"),
        ({"trian": {}}, "unknown key trian; allowed keys: seed, data, model, loss, optimizer, schedule, train"),
        (
            {"optimizer": {"name": "adamx"}},
            "unknown optimizer (optimizer.name) 'adamx'; allowed: sgd, adam, adamw, rmsprop, adagrad",
        ),
        ({"model": {"name": "resnet"}}, "unknown model (model.name) 'resnet'; allowed: mlp, fashion_mlp, cnn"),
        ({"loss": {"name": "hinge"}}, "unknown loss (loss.name) 'hinge'; allowed: cross_entropy, bce, focal, mse, l1"),
        ({"data": {"name": "imagenet"}}, "unknown dataset (data.name) 'imagenet'; allowed: intrusion,"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr must be a number, got 'fast'"),
        ({"data": {"batch_size": 1.5}}, "data.batch_size must be an integer, got 1.5"),
        ({"data": {"shuffle": "yes"}}, "data.shuffle must be true or false, got 'yes'"),
        ({"model": {"hidden": 64}}, "model.hidden must be a list of int, got 64"),
        ({"optimizer": {"lr": -1}}, "optimizer.lr must be > 0, got -1.0"),
        ({"model": {"dropout": 1.0}}, "model.dropout must be in [0, 1), got 1.0"),
        (
            {"optimizer": {"name": "adam", "momentum": 0.9}},
            "optimizer.momentum does not apply to optimizer 'adam'; it applies to: sgd, rmsprop",
        ),
        (
            {"loss": {"name": "bce", "label_smoothing": 0.1}},
            "loss.label_smoothing does not apply to loss 'bce'; it applies to: cross_entropy",
        ),
        ({"optimizer": {"name": "sgd", "nesterov": True}}, "optimizer.nesterov needs momentum > 0 and dampening 0"),
        ({"data": {"name": "csv"}}, "data.path is required for dataset 'csv'"),
        ({"train": {"precision": "float16"}}, "unknown train.precision 'float16'; allowed: fp32, bf16, fp16, fp64"),
        (
            {"train": {"precision": "fp16", "accumulation_steps": 2, "accumulation": "multisteps"}},
            "fp16 with accumulation needs train.accumulation: manual",
        ),
        (
            {"train": {"early_stopping": {"monitor": "val_auc"}}},
            "unknown train.early_stopping.monitor 'val_auc'; allowed: val_loss,",
        ),
    ],
)
def test_bad_config_gives_one_line_naming_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bad_override_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config("configs/digits_cnn.yaml", ["optimizer.lr"])
    with pytest.raises(ConfigError, match="optimizer.lr is a value, not a section"):
        load_config("configs/digits_cnn.yaml", ["optimizer.lr.x=1"])


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "c.ini").write_text("[x]\n")
    with pytest.raises(ConfigError, match="must end in"):
        load_config(tmp_path / "c.ini")
