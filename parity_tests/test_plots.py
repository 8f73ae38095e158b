"""The plot commands render PNGs from configs and runs, and refuse what they cannot draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity_tests.matrix import parity_config
from paritykit.harness import run_backends
from paritykit.plots import main

PNG = b"\x89PNG\r\n\x1a\n"


def write_epoch_metrics(path: Path, values: list[float]) -> None:
    path.write_text(
        "".join(
            json.dumps({"kind": "epoch", "epoch": e + 1, "train_loss": 1.0, "val_loss": 1.0, "val_acc": v}) + "\n"
            for e, v in enumerate(values)
        )
    )


def test_four_scheduler_comparison(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    write_epoch_metrics(metrics, [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7])
    out = tmp_path / "schedules.png"
    assert main(["schedules", "--metrics", str(metrics), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 50_000


def test_plateau_needs_a_recorded_metric(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["schedules", "configs/schedule_plateau.yaml", "--out", str(tmp_path / "x.png")]) == 2
    assert "pass --metrics RUN/metrics.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_run_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = parity_config("mlp", "sgd", "focal", steps=40)
    raw["schedule"] = {"name": "onecycle"}
    runs = run_backends(raw, tmp_path, backends=("torch", "jax"))
    for args in ([str(runs["torch"])], [str(runs["torch"]), str(runs["jax"])]):
        out = tmp_path / f"runs{len(args)}.png"
        assert main(["runs", *args, "--out", str(out)]) == 0
        assert out.read_bytes().startswith(PNG)
    assert main(["runs", str(tmp_path), "--out", str(tmp_path / "bad.png")]) == 2
    assert "not a run directory" in capsys.readouterr().err
