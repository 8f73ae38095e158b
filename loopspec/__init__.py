"""Framework-neutral spec shared by flaxloop and torchloop, and the Python API of both.

Imports neither jax nor torch (a backend is imported when it is asked for): the config schema,
datasets as NumPy arrays, the seeded batch order, parity-mode dropout masks, the canonical
(torch state_dict) weight layout with safetensors I/O, the training loop's skeleton, early
stopping, checkpoints and the metrics format.

    from loopspec import fit
    run = fit("digits_cnn", "runs/digits", backend="jax", overrides=["train.epochs=2"])
    print(run.summary["val_acc"], run.evaluate())
"""

from loopspec.backends import CORE_MODULES, lazy_exports, refuse_a_command_without

refuse_a_command_without(CORE_MODULES)

# Imported on first use, so `python -m loopspec.comparison` runs that module once.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "fit": "api",
        "compare": "api",
        "load_run": "results",
        "Run": "results",
        "Report": "comparison",
        "compare_runs": "comparison",
        "Config": "config",
        "as_config": "config",
        "load_config": "config",
        "recipe_names": "config",
        "UserError": "errors",
    },
)
