"""The Python API, the same for both backends.

from loopspec import fit, load_run, compare
run = fit({"data": {"name": "intrusion"}, "train": {"epochs": 3}}, "runs/a", backend="jax")
run.summary, run.history, run.model, run.predict(x), run.evaluate()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from loopspec.backends import BackendName, backend_module
from loopspec.comparison import Report, compare_runs
from loopspec.config import Config
from loopspec.errors import UserError
from loopspec.results import Run


def fit(
    config: Config | dict[str, Any] | str | Path,
    out_dir: str | Path,
    backend: BackendName = "torch",
    overrides: Sequence[str] = (),
    init: Any = None,
    resume: Optional[str | Path] = None,
    overwrite: bool = False,
    model: Any = None,
    data: Any = None,
    loss: Any = None,
) -> Run:
    """Train as configured with `backend` ("torch" or "jax") and return the finished run.

    config: a Config, a dict of sections (missing keys keep their defaults), a file path, or a
    shipped recipe's name ("digits_cnn"); validated the same way in each form, then `overrides`
    ("train.epochs=5", ...) are applied. model: your own model instead of the config's (a torch
    nn.Module; a flax.linen or flax.nnx Module; or an import string "pkg.module:factory"; see
    docs/models.md). data: a dict of arrays x_train, y_train, x_val, y_val, or an .npz path. loss: your
    own loss, (logits, labels) -> the mean, in the backend's framework (instead of the config's). init:
    initial weights (a safetensors path, a dict of arrays under torch's names, or a Run); a custom
    model on JAX needs them. resume: a checkpoint, a run directory, or "auto". overwrite: replace a
    run already in out_dir. Raises loopspec.errors.UserError (one line: the problem and the fix) on
    bad input.
    """
    train = backend_module(backend, "train")
    return train.fit(
        config,
        out_dir,
        overrides=overrides,
        init=init,
        resume=resume,
        overwrite=overwrite,
        model=model,
        data=data,
        loss=loss,
    )


def compare(
    run_a: str | Path | Run, run_b: str | Path | Run, rtol: float = 1e-10, steps: Optional[int] = None
) -> Report:
    """Step-by-step and tensor-by-tensor agreement of two runs; `report.agree`, `print(report.render())`."""
    paths = [run.out_dir if isinstance(run, Run) else Path(run) for run in (run_a, run_b)]
    for path in paths:
        if not (path / "metrics.jsonl").is_file():
            raise UserError(f"{path} is not a run directory (no metrics.jsonl); pass what fit or --out wrote")
    return compare_runs(paths[0], paths[1], rtol=rtol, steps=steps)
