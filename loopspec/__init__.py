"""Framework-neutral spec shared by flaxloop and torchloop, and the Python API of both.

Imports neither jax nor torch (a backend is imported when it is asked for): the config schema,
datasets as NumPy arrays, the seeded batch order, parity-mode dropout masks, the canonical
(torch state_dict) weight layout with safetensors I/O, the training loop's skeleton, early
stopping, checkpoints and the metrics format.

    from loopspec import fit
    run = fit("digits_cnn", "runs/digits", backend="jax", overrides=["train.epochs=2"])
    print(run.summary["val_acc"], run.evaluate())
"""

from loopspec.api import compare, fit
from loopspec.comparison import Report, compare_runs
from loopspec.config import Config, as_config, load_config, recipe_names
from loopspec.errors import UserError
from loopspec.results import Run, load_run

__all__ = [
    "fit",
    "load_run",
    "compare",
    "Run",
    "Report",
    "Config",
    "as_config",
    "load_config",
    "recipe_names",
    "compare_runs",
    "UserError",
]
