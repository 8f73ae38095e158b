"""What turns raw samples into the model's inputs, fitted on the training split and kept with the run.

A dataset's loader records its steps (image bytes divided into [0, 1]; tabular columns standardised with
the training split's mean and std); the run saves them in `preprocessing.json` and every checkpoint
carries them, so a trained model applied to new raw data sees what it saw in training (as a Keras
`Normalization` layer or an sklearn pipeline travels with its model). The arithmetic is the
loader's own, in float64, so raw validation rows give the validation split's inputs bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from loopspec.errors import UserError
from loopspec.files import write_json_atomic

FILE = "preprocessing.json"
FORMAT = 1


@dataclass(frozen=True)
class Preprocessing:
    """Steps applied in order: `divide` (x / divisor: image bytes to [0, 1]), then `standardize`
    ((x - mean) / std per feature). None leaves a step out; both None: inputs are used as given (npz,
    generated images)."""

    divisor: Optional[float] = None
    mean: Optional[np.ndarray] = field(default=None, compare=False)
    std: Optional[np.ndarray] = field(default=None, compare=False)
    vocab: Optional[str] = None  # text: the characters whose positions are the token ids

    def encode(self, text: str) -> np.ndarray:
        """A string as token ids; a character the run never saw is one line."""
        assert self.vocab is not None
        unknown = sorted(set(text) - set(self.vocab))
        if unknown:
            raise UserError(f"characters {''.join(unknown)!r} are not in this run's vocabulary")
        return np.array([self.vocab.index(char) for char in text], dtype=np.int64)

    def decode(self, ids: Any) -> str:
        assert self.vocab is not None
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def apply(self, raw: Any) -> np.ndarray:
        """Model inputs from raw samples shaped (N, *input_shape): float64 features, or token ids (a
        text run takes strings, each encoded with its vocabulary)."""
        if self.vocab is not None:
            if isinstance(raw, str) or (isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], str)):
                return np.stack([self.encode(text) for text in ([raw] if isinstance(raw, str) else raw)])
            return np.asarray(raw, dtype=np.int64)
        x = np.asarray(raw, dtype=np.float64)
        if self.divisor is not None:
            x = x / self.divisor
        if self.mean is not None and self.std is not None:
            if x.ndim != 2 or x.shape[1] != len(self.mean):
                raise UserError(
                    f"raw inputs of shape {x.shape} do not fit this run's standardisation of {len(self.mean)} "
                    f"features; pass rows shaped (N, {len(self.mean)})"
                )
            x = (x - self.mean) / self.std
        return x

    def to_dict(self) -> dict[str, Any]:
        steps: list[dict[str, Any]] = []
        if self.divisor is not None:
            steps.append({"kind": "divide", "by": self.divisor})
        if self.mean is not None and self.std is not None:
            steps.append({"kind": "standardize", "mean": self.mean.tolist(), "std": self.std.tolist()})
        if self.vocab is not None:
            steps.append({"kind": "characters", "vocab": self.vocab})
        return {"format": FORMAT, "steps": steps}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> "Preprocessing":
        try:
            steps = {step["kind"]: step for step in values["steps"]}
            if set(steps) - {"divide", "standardize", "characters"} or values.get("format") != FORMAT:
                raise ValueError(f"format {values.get('format')}, steps {sorted(steps)}")
            divisor = float(steps["divide"]["by"]) if "divide" in steps else None
            standardize = steps.get("standardize")
            mean = None if standardize is None else np.asarray(standardize["mean"], dtype=np.float64)
            std = None if standardize is None else np.asarray(standardize["std"], dtype=np.float64)
            vocab = steps["characters"]["vocab"] if "characters" in steps else None
            if vocab is not None and not isinstance(vocab, str):
                raise ValueError("the characters step needs its vocabulary as a string")
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where} is not a preprocessing record this version reads ({err})") from None
        if mean is not None and std is not None and (mean.shape != std.shape or mean.ndim != 1 or not np.all(std > 0)):
            raise UserError(f"{where}: the standardisation needs one mean and one positive std per feature")
        return cls(divisor, mean, std, vocab)


def standardized(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray, Preprocessing]:
    """Zero-mean unit-variance columns from training-split statistics only, and the step that does it."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns (e.g. num_outbound_cmds) stay at zero
    step = Preprocessing(mean=mean, std=std)
    return step.apply(x_train), step.apply(x_val), step


def save_preprocessing(run_dir: Path, preprocessing: Preprocessing) -> None:
    write_json_atomic(Path(run_dir) / FILE, preprocessing.to_dict())


def load_preprocessing(run_dir: str | Path) -> Optional[Preprocessing]:
    """The run's saved preprocessing; None for a run saved before runs kept it."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    return Preprocessing.from_dict(values, str(path))
