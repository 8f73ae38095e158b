"""benchmarks.peers runs every program in its own process and reports rows and ratios (smoke tests:
timings are not judged). Keras and Lightning are the [bench] extra: a missing one is a row, not a crash."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import benchmarks.peers as peers


def report(out: Path) -> dict:
    (path,) = out.glob("peers_cpu_smoke_*.json")
    assert path.with_suffix(".md").exists()
    return json.loads(path.read_text())


def test_a_missing_peer_is_a_row_and_the_others_are_measured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        peers, "missing_packages", lambda program: ["keras"] if program.module.endswith("keras_peer") else []
    )
    argv = ["--smoke", "--workloads", "default", "--programs", "flax_plain,keras", "--out", str(tmp_path)]
    assert peers.main(argv) == 0
    rows = {r["program"]: r for r in report(tmp_path)["rows"]}
    assert rows["keras"]["status"] == "not installed (pip install -e .[bench]): keras"
    plain = rows["flax_plain"]
    assert plain["status"] == "ok" and plain["updates_per_epoch"] == 8  # 1024 training rows of the smoke subset
    assert plain["ms_per_epoch"] > plain["ms_per_update"] > 0 and plain["whole_run_s"] > plain["first_epoch_done_s"]
    assert plain["ms_per_epoch_ratio"] == 1.0  # the only peer is the fastest
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "| Keras 3 on JAX, model.fit | not installed" in markdown
    assert "too short to judge the targets" in markdown


@pytest.mark.full  # every program on the default recipe: about a minute on 2 quiet cores
def test_every_program_has_a_row_and_the_library_its_ratios(tmp_path: Path) -> None:
    assert peers.main(["--smoke", "--workloads", "default", "--out", str(tmp_path)]) == 0
    data = report(tmp_path)
    rows = {r["program"]: r for r in data["rows"]}
    assert set(rows) == set(peers.PROGRAMS)
    for key, row in rows.items():
        installed = all(importlib.util.find_spec(p) for p in peers.PROGRAMS[key].packages)
        assert row["status"] == "ok" if installed else row["status"].startswith("not installed"), (key, row["status"])
    measured = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["updates_per_epoch"] == 8 and r["ms_per_epoch_ratio"] > 0 for r in measured)
    if rows["lightning"]["status"] == "ok":  # one model, batch order and seed: Lightning trains the plain loop's run
        assert rows["lightning"]["val_loss"] == pytest.approx(rows["torch_plain"]["val_loss"], rel=1e-4)
    shipped = {t["what"].split(" / ")[0] for t in data["targets"]}
    assert {"default: torchloop ms_per_epoch", "default: flaxloop ms_per_epoch"} <= shipped


def test_bad_arguments_are_one_line(capsys) -> None:
    for argv in (["--workloads", "mnist"], ["--epochs", "1"], ["--programs", ""]):
        with pytest.raises(SystemExit) as stop:
            peers.main(argv)
        assert stop.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
