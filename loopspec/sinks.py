"""Where a run's records go: metrics.jsonl (the canonical record), progress, CSV and TensorBoard.

The training loop (loopspec/loop.py) produces one record per optimizer update
(`{"kind": "step", ...}`), per validation (`"epoch"`) and at the end (`"summary"`), and hands
each to every sink. Sinks decide nothing about the run; the CSV and TensorBoard files are fed
from the same records as metrics.jsonl (and rebuilt from it when a run resumes).

Progress goes through the `loopspec` logger, so a library caller silences or redirects it with
`logging`; a handler printing to stdout is added only when neither that logger nor the root
logger has one. On a terminal each epoch shows a live bar (tqdm) with steps/s, ETA, loss and lr.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, TextIO

from tqdm import tqdm

from loopspec.errors import ConfigError
from loopspec.metrics import plain

LOG = logging.getLogger("loopspec")


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


def console_logger() -> logging.Logger:
    """The `loopspec` logger, printing plain lines to stdout unless the caller configured logging."""
    if not LOG.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
    if LOG.level == logging.NOTSET:
        LOG.setLevel(logging.INFO)
    return LOG


class ProgressSink:
    """Keras's verbosity: 0 silent; 1 a live bar per epoch on a terminal (epoch lines elsewhere);
    2 one line per epoch. Off the bar, a step line every `log_every` updates (0: none)."""

    def __init__(
        self,
        backend: str,
        epochs: int,
        updates_per_epoch: int,
        verbose: Optional[int],
        log_every: int,
        weights: Path,
        monitor: str = "val_loss",
        resumed: Optional[dict[str, Any]] = None,
    ):
        self.tag, self.epochs, self.per_epoch, self.log_every, self.weights = (
            f"[{backend}]",
            epochs,
            updates_per_epoch,
            log_every,
            weights,
        )
        self.monitor, self.resumed = monitor, resumed
        self.lr: Optional[float] = None  # the last update's learning rate, shown on the epoch line
        self.legend_shown = False
        self.verbose = (1 if sys.stderr.isatty() else 2) if verbose is None else verbose
        self.log = console_logger()
        # The bar writes to the terminal itself, so it follows the logger's level like the lines do.
        self.bar_shown = self.verbose == 1 and sys.stderr.isatty() and self.log.isEnabledFor(logging.INFO)
        self.bar: Optional[tqdm] = None
        if resumed is not None:
            self.line(
                f"resumed from update {resumed['step']} (epoch {resumed['epoch']}, "
                f"{resumed['window']} of {updates_per_epoch} updates done in it)"
            )

    def line(self, text: str) -> None:
        if self.verbose:
            (tqdm.write if self.bar is not None else self.log.info)(f"{self.tag} {text}")

    def write(self, record: dict[str, Any]) -> None:
        getattr(self, f"_{record['kind']}")(record)

    def _step(self, r: dict[str, Any]) -> None:
        if r.get("skipped"):
            if not r.get("overflow"):
                self.line(f"skipped update {r['step'] + 1} (epoch {r['epoch']}): non-finite loss or gradient")
            return
        self.lr = r["lr"]
        if self.bar_shown:
            if self.bar is None:
                resumed = self.resumed is not None and self.resumed["epoch"] == r["epoch"]
                self.bar = tqdm(
                    total=self.per_epoch,
                    # a resumed epoch's bar starts where it was
                    initial=self.resumed["window"] if resumed and self.resumed is not None else 0,
                    desc=f"{self.tag} epoch {r['epoch']}/{self.epochs}",
                    unit="step",
                    dynamic_ncols=True,
                    leave=True,
                )
            self.bar.set_postfix(loss=f"{r['loss']:.4g}", lr=f"{r['lr']:.3g}", refresh=False)
            self.bar.update(1)
        elif self.log_every and r["step"] % self.log_every == 0:
            self.line(
                f"epoch {r['epoch']} step {r['step']} loss {r['loss']:.6g} lr {r['lr']:.4g} "
                f"grad_norm {r['grad_norm']:.4g}"
            )

    def _epoch(self, r: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.legend_shown:
            self.line(f"(an epoch line ending in * is a new best {self.monitor}, the early-stopping monitor)")
            self.legend_shown = True
        shown = " - ".join(f"{k}: {v:.4f}" for k, v in r.items() if k.startswith("val_"))
        lr = "" if self.lr is None else f" - lr: {self.lr:.3g}"
        self.line(
            f"epoch {r['epoch']}/{self.epochs} - {r['seconds']:.1f}s - step {r['step']} - "
            f"train_loss: {r['train_loss']:.4f} - {shown}{lr}{' *' if r.get('improved') else ''}"
        )

    def _summary(self, r: dict[str, Any]) -> None:
        if r["stopped_early"]:
            self.line(
                f"early stopping at epoch {r['epochs']}: no {r['monitor']} improvement; best epoch {r['best_epoch']}"
            )
        self.line(f"done: {r['steps']} steps, final weights from epoch {r['final_epoch']} -> {self.weights}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


STEP_COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "momentum", "clipped", "loss_scale", "skipped", "overflow"]
EPOCH_COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_precision",
    "val_recall",
    "val_f1",
    "skipped",
    "improved",
    "seconds",
]


class CsvSink:
    """metrics_steps.csv and metrics_epochs.csv: the step and epoch records as rows."""

    def __init__(self, out_dir: Path):
        self.files = {kind: open(out_dir / f"metrics_{kind}s.csv", "w", newline="") for kind in ("step", "epoch")}
        self.writers = {
            kind: csv.DictWriter(self.files[kind], columns, extrasaction="ignore")
            for kind, columns in (("step", STEP_COLUMNS), ("epoch", EPOCH_COLUMNS))
        }
        for writer in self.writers.values():
            writer.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if record["kind"] in self.writers:
            self.writers[record["kind"]].writerow(plain(record))
            self.files[record["kind"]].flush()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


class TensorBoardSink:
    """TensorBoard event files in out/tensorboard (tensorboardX: no TensorFlow): `step/<key>` at the
    update count, `epoch/<key>` at the epoch."""

    def __init__(self, log_dir: Path):
        from tensorboardX import SummaryWriter  # present: check_loggers ran before the run directory was touched

        shutil.rmtree(log_dir, ignore_errors=True)  # rebuilt from metrics.jsonl when a run resumes
        self.writer = SummaryWriter(str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        if record["kind"] == "summary" or record.get("skipped") is True:
            return
        at = record["step"] if record["kind"] == "step" else record["epoch"]
        for key, value in record.items():
            if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, global_step=at)

    def close(self) -> None:
        self.writer.close()


def check_loggers(loggers: Sequence[str]) -> None:
    """Before the run directory is touched: every configured logger can be built here."""
    if "tensorboard" in loggers and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(
            "train.loggers tensorboard needs tensorboardX, which is not installed: "
            "pip install 'jax-torch-parity[tensorboard]', or drop tensorboard from train.loggers"
        )


def run_sinks(
    out_dir: Path,
    backend: str,
    train_cfg: Any,
    updates_per_epoch: int,
    keep_lines: int,
    resumed: Optional[dict[str, Any]] = None,
) -> list[Sink]:
    """metrics.jsonl (continued from `keep_lines` when resuming from the checkpoint position `resumed`),
    progress, and the configured loggers, which are fed the kept records first, so they hold the whole run."""
    jsonl = JsonlSink(out_dir / "metrics.jsonl", keep_lines)
    extra: list[Sink] = []
    if "csv" in train_cfg.loggers:
        extra.append(CsvSink(out_dir))
    if "tensorboard" in train_cfg.loggers:
        extra.append(TensorBoardSink(out_dir / "tensorboard"))
    if extra and keep_lines:
        for line in jsonl.path.read_text().splitlines():
            for sink in extra:
                sink.write(json.loads(line))
    progress = ProgressSink(
        backend,
        train_cfg.epochs,
        updates_per_epoch,
        train_cfg.verbose,
        train_cfg.log_every,
        out_dir / "final.safetensors",
        train_cfg.early_stopping.monitor,
        resumed,
    )
    return [jsonl, progress, *extra]
