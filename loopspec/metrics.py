"""The metrics format both backends write, and classification metrics computed in NumPy.

`metrics.jsonl` holds one JSON object per line: `{"kind": "step", ...}` after every optimizer
step, `{"kind": "epoch", ...}` after every validation, and one `{"kind": "summary", ...}` at
the end. Steps and epochs count from 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def plain(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN; keep it readable and parseable
        out[key] = value
    return out


def read_metrics(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Split a metrics.jsonl into its step, epoch and summary records."""
    records: dict[str, list[dict[str, Any]]] = {"step": [], "epoch": [], "summary": []}
    with open(path) as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                records.setdefault(record.get("kind", "step"), []).append(record)
    return records


def predictions(logits: np.ndarray) -> np.ndarray:
    """Class ids from logits: sign of a single binary logit, argmax otherwise."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=-1)  # (N, C), or (N, T, V) per token


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy; and precision, recall, F1 of class 1 for binary tasks."""
    metrics = {"val_acc": float(np.mean(predicted == labels))}
    if num_classes == 2:
        true_pos = float(np.sum((predicted == 1) & (labels == 1)))
        pred_pos = float(np.sum(predicted == 1))
        real_pos = float(np.sum(labels == 1))
        precision = true_pos / pred_pos if pred_pos else 0.0
        recall = true_pos / real_pos if real_pos else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.update(val_precision=precision, val_recall=recall, val_f1=f1)
    return metrics
