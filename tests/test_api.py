"""The Python API: one `fit` for both backends from any config form, the run it returns (summary,
history, model, predictions), `load_run` across backends, `compare`, and the README's script."""

from __future__ import annotations

import dataclasses
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import flaxloop
import torchloop
from loopspec import Config, UserError, compare, fit, load_run
from loopspec.config import DataConfig, ModelConfig, TrainConfig
from loopspec.weights import load_weights

TINY = {
    "data": {"name": "intrusion", "num_samples": 600, "batch_size": 32},
    "model": {"name": "mlp", "hidden": [16, 8], "dropout": 0.0},
    "train": {"epochs": 2, "precision": "fp64", "verbose": 0},
}
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_fit_takes_a_dict_a_config_a_path_or_a_recipe(backend: str, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(
        "data: {name: intrusion, num_samples: 600, batch_size: 32}\n"
        "model: {name: mlp, hidden: [16, 8], dropout: 0.0}\n"
        "train: {epochs: 2, precision: fp64, verbose: 0}\n"
    )
    built = Config(
        data=DataConfig(name="intrusion", num_samples=600, batch_size=32),
        model=ModelConfig(name="mlp", hidden=[16, 8], dropout=0.0),
        train=TrainConfig(epochs=2, precision="fp64", verbose=0),
    )
    runs = [fit(form, tmp_path / f"run{i}", backend=backend) for i, form in enumerate((TINY, built, config_file))]
    finals = [load_weights(run.out_dir / "final.safetensors") for run in runs]
    for other in finals[1:]:  # one config in three forms: one run
        assert all(np.array_equal(finals[0][name], other[name]) for name in finals[0])
    recipe = fit("intrusion_mlp_focal", tmp_path / "recipe", backend, overrides=["train.epochs=1", "train.verbose=0"])
    assert recipe.config.loss.name == "focal" and recipe.summary["epochs"] == 1


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_bad_config_in_any_form_is_one_user_error_and_writes_nothing(backend: str, tmp_path: Path) -> None:
    bad_built = dataclasses.replace(Config(), train=dataclasses.replace(TrainConfig(), epochs=2))
    object.__setattr__(bad_built.train, "epochs", -3)  # past the constructor: fit validates again
    forms = [{"train": {"epochs": -3}}, bad_built, tmp_path / "missing.yaml", "no_such_recipe", 42]
    for i, form in enumerate(forms):
        with pytest.raises(UserError) as caught:
            fit(form, tmp_path / f"run{i}", backend=backend)
        assert "\n" not in str(caught.value)
        assert not (tmp_path / f"run{i}").exists()
    with pytest.raises(UserError, match="epochs"):
        fit(TINY, tmp_path / "override", backend=backend, overrides=["train.epochs=0"])


def test_the_run_holds_summary_history_and_a_working_model(tmp_path: Path) -> None:
    torch_run = fit(TINY, tmp_path / "torch", backend="torch")
    jax_run = flaxloop.fit(TINY, tmp_path / "jax")
    assert isinstance(torch_run.model, torch.nn.Module) and not torch_run.model.training
    assert isinstance(jax_run.model, flaxloop.inference.TrainedModel)
    for run in (torch_run, jax_run):
        history = run.history
        assert len(history["epoch"]) == 2 and history["step"][-1]["step"] == run.summary["steps"]
        # The returned model reproduces the validation of the saved weights, bit for bit in float64.
        assert run.evaluate() == {k: v for k, v in run.summary.items() if k.startswith("val_") and k != "val_loss"}
    data = torch_run.dataset()
    logits = torch_run.predict(data.x_val, preprocessed=True)
    assert logits.shape == (len(data.y_val), 2) and logits.dtype == np.float64
    np.testing.assert_allclose(jax_run.predict(data.x_val, preprocessed=True), logits, rtol=1e-9, atol=1e-12)
    assert compare(torch_run, jax_run).agree


def test_load_run_gives_either_backends_model_of_the_same_weights(tmp_path: Path) -> None:
    cnn = {
        "data": {"name": "synthetic_images", "num_samples": 256, "batch_size": 32},
        "model": {"name": "cnn", "channels": [4, 8, 8]},
        "train": {"epochs": 1, "precision": "fp64", "verbose": 0},
    }
    torchloop.fit(cnn, tmp_path / "run")
    as_torch, as_jax = load_run(tmp_path / "run"), load_run(tmp_path / "run", backend="jax")
    assert as_torch.backend == "torch" and as_jax.backend == "jax"
    images = as_torch.dataset().x_val[:16]
    np.testing.assert_allclose(
        as_jax.predict(images, preprocessed=True), as_torch.predict(images, preprocessed=True), rtol=1e-9, atol=1e-12
    )
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path)


def test_the_readme_script_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """As a script, in this process (a subprocess would import both frameworks again)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python") : readme.index("## What parity means")]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in script.splitlines() if line.strip()]) <= 10
    (tmp_path / "readme_api.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "readme_api.py"), run_name="__main__")
    shown = capsys.readouterr().out
    lines = [line for line in shown.splitlines() if not line.startswith(("[torch]", "[jax]"))]  # progress
    assert lines[0].startswith("torch TabularMLP (") and lines[1].startswith("jax TrainedModel (")
    assert lines[-1] == "agree to 1e-10: True"


def test_a_float64_jax_model_computes_in_float64_when_called(tmp_path: Path) -> None:
    run = flaxloop.fit(TINY, tmp_path / "run")
    x = run.dataset().x_val[:8]
    assert run.model(x).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(run.model(x)), run.predict(x, preprocessed=True))


def test_a_directory_named_like_a_recipe_does_not_hide_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits_cnn").mkdir()
    from loopspec.config import config_path

    assert config_path("digits_cnn").name == "digits_cnn.yaml" and config_path("digits_cnn").is_file()


def test_compare_and_load_run_reject_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        compare(tmp_path, tmp_path)


def test_a_logger_that_cannot_be_built_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a)
    )
    with pytest.raises(UserError, match="tensorboardX"):
        fit(TINY, tmp_path / "run", overrides=["train.loggers=[jsonl,tensorboard]"])
    assert not (tmp_path / "run").exists()
