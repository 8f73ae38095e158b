"""Where a run's records go: metrics.jsonl (the canonical record) and the console.

The training loop (loopspec/loop.py) produces one record per optimizer update
(`{"kind": "step", ...}`), per validation (`"epoch"`) and at the end (`"summary"`), and hands
each to every sink. Sinks decide nothing about the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, TextIO

from loopspec.metrics import plain


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends whole JSON lines and flushes each, so a crash never leaves a torn record."""

    def __init__(self, path: str | Path, keep_lines: int = 0):
        """A new file, or (resuming) the first `keep_lines` lines of the existing one, continued."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = self.path.read_text().splitlines(keepends=True)[:keep_lines] if keep_lines and self.path.exists() else []
        self._file: TextIO = open(self.path, "w")
        self._file.writelines(kept)
        self._file.flush()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(plain(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class ConsoleSink:
    """Progress lines: a step line every `log_every` updates, one line per epoch, the outcome."""

    def __init__(self, backend: str, epochs: int, log_every: int, weights: Path):
        self.tag, self.epochs, self.log_every, self.weights = f"[{backend}]", epochs, log_every, weights

    def write(self, record: dict[str, Any]) -> None:
        line = getattr(self, f"_{record['kind']}")(record)
        if line:
            print(f"{self.tag} {line}", flush=True)

    def _step(self, r: dict[str, Any]) -> str:
        if r.get("skipped") and not r.get("overflow"):
            return f"skipped update {r['step'] + 1} (epoch {r['epoch']}): non-finite loss or gradient"
        if r.get("skipped"):
            return ""
        if self.log_every and r["step"] % self.log_every == 0:
            return (
                f"epoch {r['epoch']} step {r['step']} loss {r['loss']:.6g} lr {r['lr']:.4g} "
                f"grad_norm {r['grad_norm']:.4g}"
            )
        return ""

    def _epoch(self, r: dict[str, Any]) -> str:
        shown = " ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("val_"))
        return (
            f"epoch {r['epoch']}/{self.epochs} step {r['step']} train_loss {r['train_loss']:.4f} {shown}"
            f"{' *' if r.get('improved') else ''} ({r['seconds']:.1f}s)"
        )

    def _summary(self, r: dict[str, Any]) -> str:
        lines = []
        if r["stopped_early"]:
            lines.append(
                f"early stopping at epoch {r['epochs']}: no {r['monitor']} improvement; best epoch {r['best_epoch']}"
            )
        lines.append(f"done: {r['steps']} steps, final weights from epoch {r['final_epoch']} -> {self.weights}")
        return f"\n{self.tag} ".join(lines)

    def close(self) -> None:
        pass
