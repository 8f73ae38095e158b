"""A run directory read back: its config, records and trained model, for either backend.

`fit` returns one; `load_run(dir)` opens one written earlier (by the CLI, by `fit`, on another
machine). The weights are in the canonical layout, so a run trained by one backend loads as
the other backend's model too: `load_run(dir, backend="jax")` on a torch run.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from loopspec.backends import BackendName, backend_module
from loopspec.config import Config, config_from_dict
from loopspec.data import Dataset, load_dataset
from loopspec.errors import UserError
from loopspec.metrics import classification_metrics, predictions, read_metrics
from loopspec.preprocessing import Preprocessing, load_preprocessing
from loopspec.weights import load_weights


@dataclass(frozen=True)
class Run:
    """One run directory. `model` is the trained network of `backend` (torch: an eval-mode
    nn.Module; jax: a flaxloop.inference.TrainedModel holding the flax module and its variables)."""

    out_dir: Path
    config: Config
    backend: BackendName
    input_shape: tuple[int, ...]
    num_classes: int
    models: dict[str, Any] = field(default_factory=dict, compare=False)  # backend -> a module given to fit/load_run
    integer_inputs: bool = False  # the model takes token ids

    @property
    def history(self) -> dict[str, list[dict[str, Any]]]:
        """metrics.jsonl by kind: "step", "epoch" and "summary" records."""
        return read_metrics(self.out_dir / "metrics.jsonl")

    @property
    def summary(self) -> dict[str, Any]:
        """The last summary record: steps, epochs, why it stopped, the final epoch's val_* metrics."""
        summaries = self.history["summary"]
        if not summaries:
            raise UserError(f"{self.out_dir} has no summary record: the run has not finished; --resume it")
        return summaries[-1]

    def weights(self, which: Literal["final", "best", "init"] = "final") -> dict[str, np.ndarray]:
        """The run's `which`.safetensors in the canonical (torch state_dict) layout, checked (names,
        shapes, dtypes, finite values) against the run's own tensors, as init.safetensors holds them."""
        layout = self.out_dir / "init.safetensors"
        shapes = None
        if which != "init" and layout.is_file():
            shapes = {name: tuple(value.shape) for name, value in load_weights(layout).items()}
        return load_weights(self.out_dir / f"{which}.safetensors", shapes)

    @functools.cached_property
    def model(self) -> Any:
        """The final weights' network, built once (see the class docstring for its type)."""
        return self.load_model("final")

    def load_model(self, which: Literal["final", "best", "init"] = "final") -> Any:
        """The network with `which` weights, in the weights' own dtype, ready for inference."""
        return backend_module(self.backend, "inference").load_model(self, self.weights(which))

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """What turns raw samples into model inputs: saved with the run (refitted from the run's data for
        a run saved before runs kept it; the same numbers, as the split is seeded)."""
        saved = load_preprocessing(self.out_dir)
        return saved if saved is not None else self.dataset().preprocessing

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Model inputs from raw samples (N, *input_shape): as the training data was prepared."""
        return self.preprocessing.apply(raw)

    def predict(self, inputs: np.ndarray, preprocessed: bool = False) -> np.ndarray:
        """Logits of the final model, as a NumPy array, for raw samples shaped (N, *input_shape), which
        get the run's preprocessing first; preprocessed=True for inputs already prepared (run.dataset())."""
        inputs = np.asarray(inputs) if preprocessed else self.preprocess(inputs)
        return backend_module(self.backend, "inference").predict(self.model, inputs)

    def generate(
        self, prompt: str | list[int], max_new_tokens: int = 200, temperature: float = 0.0, seed: int = 0
    ) -> str | np.ndarray:
        """Continue `prompt` one token at a time with the final model (nanoGPT's sample loop): the
        most likely next token (temperature 0), or one drawn from softmax(logits / temperature) with
        NumPy's generator seeded by `seed`. A text run takes and returns a string; token ids otherwise."""
        if not self.integer_inputs or len(self.input_shape) != 1:
            raise UserError(f"generate needs a model over token ids (N, T); this run's inputs are {self.input_shape}")
        preprocessing = self.preprocessing
        if isinstance(prompt, str):
            if preprocessing.vocab is None:
                raise UserError("this run has no character vocabulary: give the prompt as token ids")
            ids = [int(i) for i in preprocessing.encode(prompt)]
        else:
            ids = [int(i) for i in prompt]
        if not ids or min(ids) < 0 or max(ids) >= self.num_classes:
            raise UserError(f"the prompt needs token ids in 0..{self.num_classes - 1}, at least one")
        (block,) = self.input_shape
        rng = np.random.default_rng(seed)
        for _ in range(max_new_tokens):
            context = ids[-block:]
            # Padded on the right to the block: a causal model's earlier positions do not see the
            # padding, and one input shape keeps a compiled JAX model from retracing per length.
            window = np.zeros((1, block), np.int64)
            window[0, : len(context)] = context
            logits = self.predict(window, preprocessed=True)[0, len(context) - 1].astype(np.float64)
            if temperature <= 0:
                ids.append(int(np.argmax(logits)))
            else:
                weights = np.exp((logits - logits.max()) / temperature)
                ids.append(int(rng.choice(len(weights), p=weights / weights.sum())))
        return (
            preprocessing.decode(ids) if preprocessing.vocab is not None and isinstance(prompt, str) else np.array(ids)
        )

    def dataset(self) -> Dataset:
        """The run's data, split and preprocessed exactly as in training (x_* are model inputs)."""
        return load_dataset(self.config.data)

    def evaluate(
        self, inputs: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None, preprocessed: bool = False
    ) -> dict[str, float]:
        """Accuracy, precision, recall, F1 of the final model on raw `inputs` (or preprocessed ones, as in
        predict); default: the run's validation split."""
        if inputs is None:
            data = self.dataset()
            inputs, labels, preprocessed = data.x_val, data.y_val, True
        if labels is None:
            raise UserError("evaluate(inputs, labels): pass the labels with the inputs")
        logits = self.predict(inputs, preprocessed=preprocessed)
        return classification_metrics(np.asarray(labels), predictions(logits), self.num_classes)


def load_run(
    run_dir: str | Path, backend: Optional[BackendName] = None, model: Any = None, models: Optional[dict] = None
) -> Run:
    """Open a run directory; `backend` picks the model's framework (default: the one that trained it).
    model: for a custom pair, the module (or import string) to load the weights into, when the run's
    config has no import string for that backend."""
    out_dir = Path(run_dir)
    for name in ("config.json", "run.json"):
        if not (out_dir / name).is_file():
            raise UserError(f"{out_dir} is not a run directory (no {name}); pass the directory fit or --out wrote")
    try:
        config = config_from_dict(json.loads((out_dir / "config.json").read_text()))
        facts = json.loads((out_dir / "run.json").read_text())
        backend = backend or facts["backend"]
        input_shape, num_classes = tuple(int(n) for n in facts["input_shape"]), int(facts["num_classes"])
        integer_inputs = bool(facts.get("integer_inputs", False))
    except (OSError, ValueError, RecursionError, KeyError, TypeError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else f"{type(err).__name__}: {err}"
        raise UserError(f"{out_dir} holds a damaged config.json or run.json ({reason})") from None
    models = dict(models or {})
    if isinstance(model, str):
        raw = config.to_dict()
        raw["model"]["torch" if backend == "torch" else "flax"] = model
        config = config_from_dict(raw)
    elif model is not None:
        models[backend] = model
    return Run(out_dir, config, backend, input_shape, num_classes, models, integer_inputs)
