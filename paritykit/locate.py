"""`parity-locate RUN_A RUN_B` (also `python -m paritykit.locate`, and `paritykit.locate(run_a, run_b)`):
where two float64 runs of one config part, and the likely why.

1. The update: the first whose step records (loss, lr, grad_norm, momentum, loss scale) differ beyond
   1e-10; failing that, the first epoch whose validation metrics differ, or the final tensors
   (hidden state: BatchNorm buffers), searched by replaying both from the same state.
2. The state just before it: run A's nearest checkpoint at or before it (or its init.safetensors),
   replayed by run A's backend to that update (`pause_after`: the config, and so its schedule,
   unchanged).
3. That one update on both backends from that same state, compared in the order an update
   computes it: every submodule's output (torch names), the loss, every gradient, the gradient norm
   and clipping, each optimizer slot and the applied update per tensor, the lr, momentum and loss
   scale, and the BatchNorm buffers. The first over 1e-10 is named with the last that agreed.
4. A diagnosis: each trap of the catalogue (paritykit.diagnosis) checks for the signature it leaves.

Float32 and mixed-precision runs are located in float64: the locator replays their config with
`train.precision: fp64` from the same initial weights, where rounding cannot pass for a semantic
difference (docs/locate.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from loopspec.batching import train_batches, update_windows
from loopspec.checkpoint import RESUME_MAY_CHANGE, load_checkpoint, step_name
from loopspec.comparison import FLOAT64_RTOL, differing_keys, run_facts
from loopspec.config import Config, config_from_dict
from loopspec.errors import Paused, UserError
from loopspec.metrics import read_metrics
from loopspec.weights import load_weights
from paritykit.pairs import relative

STEP_KEYS = ("loss", "grad_norm", "lr", "momentum", "loss_scale")
ORDER = (
    "initial weights",
    "forward",
    "loss",
    "gradient",
    "gradient norm",
    "optimizer slot",
    "update",
    "hyper-parameter",
    "buffer",
)


@dataclass
class Measured:
    """One quantity of the located update, both backends from the same state."""

    stage: str  # one of ORDER
    name: str  # torch's name, or the record's key
    rel: float
    detail: str = ""
    values: tuple[Any, ...] = (None, None)  # run A's and run B's (a buffer: before, A, B), where a diagnosis needs them

    @property
    def ok(self) -> bool:
        return self.rel <= FLOAT64_RTOL


@dataclass
class Location:
    """Where two runs part (`update`, `first`, `last_agreeing`) and why (`diagnoses`)."""

    runs: tuple[Path, Path]
    backends: tuple[str, str]
    update: Optional[int] = None
    found_by: str = ""
    quantities: list[Measured] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    probe: Optional[tuple] = field(default=None, repr=False)  # what probe_update needs, for the diagnosis

    @property
    def first(self) -> Optional[Measured]:
        return next((q for q in self.quantities if not q.ok), None)

    @property
    def last_agreeing(self) -> Optional[Measured]:
        first = self.first
        if first is None:
            return None
        before = self.quantities[: self.quantities.index(first)]
        return before[-1] if before else None

    @property
    def agree(self) -> bool:
        return self.update is None

    def render(self) -> str:
        a, b = self.runs
        lines = [f"A: {a} ({self.backends[0]})", f"B: {b} ({self.backends[1]})", *self.notes]
        if self.update is None:
            lines.append(f"AGREE: no update parts beyond {FLOAT64_RTOL:g} ({self.found_by})")
            return "\n".join(lines)
        lines.append(f"the runs part at update {self.update} ({self.found_by})")
        first, last = self.first, self.last_agreeing
        if first is None:
            lines.append(
                "that update, replayed on both backends from A's state before it, agrees in every quantity: no "
                "part of it differs in what it computes; the runs' states had parted by rounding-level differences "
                "that training amplified (a sensitive trajectory, not a semantic difference)"
            )
        else:
            lines.append(
                f"first over {FLOAT64_RTOL:g}: {first.stage} {first.name} ({first.detail}) rel {first.rel:.3g}"
            )
            lines.append(
                "last that agreed: "
                + (f"{last.stage} {last.name} rel {last.rel:.2g}" if last else "nothing (the first)")
            )
        lines += [f"likely cause: {d}" for d in self.diagnoses] or ["likely cause: not one the catalogue knows"]
        shown = [q for q in self.quantities if not q.ok][:12]
        if shown:
            lines.append("parted in that update (in the order it computes them):")
            lines += [f"  {q.stage:<15} {q.name:<48} {q.rel:.3g}" for q in shown]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the update


def step_records(run: Path) -> list[dict[str, Any]]:
    return [s for s in read_metrics(run / "metrics.jsonl")["step"] if not s.get("skipped")]


def first_parted_step(steps_a: list[dict], steps_b: list[dict]) -> Optional[int]:
    for i, (sa, sb) in enumerate(zip(steps_a, steps_b)):
        for key in STEP_KEYS:
            if (key in sa) != (key in sb) or (key in sa and relative(sa[key], sb[key]) > FLOAT64_RTOL):
                return i + 1
    return None if len(steps_a) == len(steps_b) else min(len(steps_a), len(steps_b)) + 1


def hidden_state_parted(run_a: Path, run_b: Path) -> Optional[str]:
    """Validation metrics or final tensors that part while every step record agreed."""
    epochs_a, epochs_b = (read_metrics(r / "metrics.jsonl")["epoch"] for r in (run_a, run_b))
    for ea, eb in zip(epochs_a, epochs_b):
        for key in ("val_loss", "val_acc"):
            if key in ea and key in eb and relative(ea[key], eb[key]) > FLOAT64_RTOL:
                return f"epoch {ea['epoch']} {key}"
    if (run_a / "final.safetensors").exists() and (run_b / "final.safetensors").exists():
        wa, wb = load_weights(run_a / "final.safetensors"), load_weights(run_b / "final.safetensors")
        for name in sorted(set(wa) & set(wb)):
            if relative(wa[name], wb[name]) > FLOAT64_RTOL:
                return f"final tensor {name}"
    return None


# ----------------------------------------------------------------------------- replays


class Replayer:
    """Runs of the located config in a scratch directory, paused after a given update."""

    def __init__(self, config: dict[str, Any], init: Path, work: Path, models: dict[str, Any]):
        self.config, self.init, self.work, self.models = config, init, work, models
        self.count = 0

    def run(self, backend: str, until: int, resume: Optional[Path], save_before: bool = False) -> Path:
        """A checkpoint after update `until` (backend from `resume`, or from init); with
        `save_before`, one after update `until - 1` beside it (one replay gives both)."""
        from loopspec.backends import backend_module

        self.count += 1
        out = self.work / f"{self.count:03d}-{backend}-{until}"
        fit = backend_module(backend, "train").fit
        init = None if resume is not None else self.init
        config = copy.deepcopy(self.config)
        if save_before and until > 1:  # checkpoint settings may change on resume; training does not see them
            config["train"]["checkpoint"] = {"every_steps": until - 1, "every_epoch": False, "keep_last": 1000}
        try:
            fit(config, out, init=init, resume=resume, model=self.models.get(backend), pause_after=until)
        except Paused:
            return out / "checkpoints" / step_name(until)
        raise UserError(f"the replay on {backend} ended before update {until}: the runs hold fewer updates")

    def checkpoints(self, backend: str) -> list[Path]:
        """Every complete checkpoint the replays on `backend` wrote: states of the located config, so a
        later update starts from them instead of replaying from the start again."""
        found = self.work.glob(f"*-{backend}-*/checkpoints/step-*")
        return sorted(p for p in found if (p / "COMPLETE").exists())


def replay_side(location: Location, update: int, checkpoints_a: Optional[list[Path]]) -> tuple[str, list[Path]]:
    """Which run's backend replays to the update before: A's (torch, the reference, by default), or
    B's when its nearest checkpoint and its speed make the replay under 0.7 of A's. Their records
    agree up to there, so either state is the one both had."""
    a, b = location.runs
    if checkpoints_a is None:  # replays of another precision: from the initial weights only
        return location.backends[0], []
    sides = [(location.backends[0], checkpoints_a, a), (location.backends[1], run_checkpoints(b), b)]

    def cost(side: tuple[str, list[Path], Path]) -> float:
        _, checkpoints, run = side
        steps = [load_checkpoint(c).step for c in checkpoints]
        start = max((s for s in steps if s <= update - 1), default=0)
        return (update - 1 - start) * seconds_per_update(run)

    backend, checkpoints, _ = sides[1] if cost(sides[1]) < 0.7 * cost(sides[0]) else sides[0]
    return backend, checkpoints


def seconds_per_update(run: Path) -> float:
    """The run's own pace: its epochs' seconds over its updates (compilation included)."""
    epochs = read_metrics(run / "metrics.jsonl")["epoch"]
    steps = max((e.get("step", 0) for e in epochs), default=0)
    seconds = sum(float(e.get("seconds", 0.0)) for e in epochs)
    return seconds / steps if steps and seconds else float("inf")


def run_checkpoints(run: Path) -> list[Path]:
    root = run / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "COMPLETE").exists()) if root.is_dir() else []


def batch_of(config: Config, checkpoint: Optional[Path], num_train: int) -> tuple[np.ndarray, int, str]:
    """The first micro-batch of the update after `checkpoint` (None: the first update): its rows,
    the forward pass its dropout masks are drawn for, and where it sits."""
    if checkpoint is None:
        epoch, window, forward_pass = 1, 0, 0
    else:
        position = load_checkpoint(checkpoint).state["position"]
        epoch, window, forward_pass = position["epoch"], position["window"], position["forward_passes"]
    data = config.data
    windows = update_windows(
        train_batches(num_train, data.batch_size, config.seed, epoch, data.shuffle, data.drop_last),
        config.train.accumulation_steps,
    )
    if window >= len(windows):  # the checkpoint ends an epoch: the next update opens the next one
        epoch, window = epoch + 1, 0
        windows = update_windows(
            train_batches(num_train, data.batch_size, config.seed, epoch, data.shuffle, data.drop_last),
            config.train.accumulation_steps,
        )
    rows = np.asarray(windows[window][0])
    return rows, forward_pass, f"epoch {epoch}, update {window + 1} of {len(windows)}, {len(rows)} rows"


# ----------------------------------------------------------------------------- comparing one update


def compare_update(
    config: Config,
    before: dict[str, np.ndarray],
    after_a: Path,
    after_b: Path,
    update: int,
) -> list[Measured]:
    """Everything the two backends' updates wrote, in the order an update computes it."""
    ca, cb = load_checkpoint(after_a), load_checkpoint(after_b)
    out: list[Measured] = []
    sa, sb = (step_records(c.path.parent.parent)[update - 1] for c in (ca, cb))
    out.append(Measured("loss", "step loss", relative(sa["loss"], sb["loss"]), "recorded", (sa["loss"], sb["loss"])))
    out.append(Measured("gradient norm", "grad_norm", relative(sa["grad_norm"], sb["grad_norm"]), "before clipping"))
    if "clipped" in sa:
        out.append(Measured("gradient norm", "clipped", 0.0 if sa["clipped"] == sb.get("clipped") else np.inf))
    model_a, model_b = ca.prefixed("model"), cb.prefixed("model")
    slots_a, slots_b = ca.prefixed("optimizer"), cb.prefixed("optimizer")
    for name in sorted(set(slots_a) | set(slots_b)):
        rel = relative(slots_a[name], slots_b[name]) if name in slots_a and name in slots_b else np.inf
        shape = str(tuple(np.shape(slots_a.get(name, 0))))
        out.append(Measured("optimizer slot", name, rel, shape, (slots_a.get(name), slots_b.get(name))))
    buffers = [n for n in model_a if is_buffer(n)]
    for name in (n for n in model_a if not is_buffer(n)):
        if name not in model_b:
            continue
        step_a, step_b = model_a[name] - before[name], model_b[name] - before[name]
        # On the weights' scale, as the runs are compared: an update's own digits cancel.
        rel = relative(model_a[name], model_b[name])
        out.append(Measured("update", name, rel, "applied update", (step_a, step_b)))
    for key in ("lr", "momentum", "loss_scale"):
        if key in sa:
            out.append(
                Measured("hyper-parameter", key, relative(sa[key], sb.get(key, np.nan)), "", (sa[key], sb.get(key)))
            )
    for name in buffers:
        if name in model_b:
            values = (before.get(name), model_a[name], model_b[name])
            out.append(Measured("buffer", name, relative(model_a[name], model_b[name]), "after the update", values))
    return out


def is_buffer(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def probe_update(
    config: Config,
    before: dict[str, np.ndarray],
    rows: np.ndarray,
    forward_pass: int,
    models: dict[str, Any],
    torch_variant: Any = None,
    torch_loss: Any = None,
) -> list[Measured]:
    """Every submodule's output, the loss and every gradient on the update's first micro-batch, in
    float64 from the same state (the pair check's probe). A diagnosis tries hypotheses on the torch
    side: `torch_variant(module)` changes the module (a GELU made tanh), `torch_loss` a LossConfig."""
    from flaxloop.models import build_model as build_flax
    from loopspec.data import load_dataset
    from loopspec.models import output_dim
    from paritykit.pairs import PairReport, probe
    from torchloop.models import build_model as build_torch

    dataset = load_dataset(config.data) if (config.data.name != "arrays" or config.data.path) else None
    if dataset is None:
        return []
    out_dim = output_dim(config.loss.name, dataset.num_classes)
    torch_model = build_torch(config.model, dataset.input_shape, out_dim, models.get("torch"))
    import jax.numpy as jnp

    flax_model = build_flax(config.model, dataset.input_shape, out_dim, jnp.float64, jnp.float64, models.get("jax"))
    if torch_variant is not None:
        torch_variant(torch_model)
    loss_pair = None
    if torch_loss is not None:
        from flaxloop.losses import make_loss as make_flax_loss
        from torchloop.losses import make_loss as make_torch_loss

        num_classes = dataset.num_classes
        loss_pair = (
            make_torch_loss(torch_loss, num_classes, out_dim).double(),
            make_flax_loss(config.loss, num_classes, out_dim),
        )
    report = PairReport()
    name_map = flax_model.names(config.model.name_map)  # the module's own map, the config's over it
    probe(
        config, torch_model, flax_model, dataset, name_map, report, loss_pair,
        state=before, rows=rows, forward_pass=forward_pass,
    )  # fmt: skip
    stages = {"train forward": "forward", "loss": "loss", "gradient": "gradient"}
    return [Measured(stages[q.stage], q.name, q.rel, q.kind, q.values) for q in report.quantities if q.stage in stages]


# ----------------------------------------------------------------------------- the locator


def same_config(run_a: Path, run_b: Path) -> dict[str, Any]:
    facts_a, facts_b = run_facts(run_a), run_facts(run_b)
    for run, facts in ((run_a, facts_a), (run_b, facts_b)):
        if not facts["config"] or not (run / "metrics.jsonl").is_file():
            raise UserError(f"{run} is not a run directory (no config.json or metrics.jsonl); pass two run directories")
    differing = [d for d in differing_keys(facts_a["config"], facts_b["config"]) if not d.startswith(RESUME_MAY_CHANGE)]
    if differing:
        raise UserError(
            f"the runs are of different configs ({', '.join(differing[:3])}); the locator needs two runs of one config"
        )
    return facts_a["config"]


def locate(
    run_a: str | Path,
    run_b: str | Path,
    work_dir: Optional[str | Path] = None,
    models: Optional[dict[str, Any]] = None,
) -> Location:
    """Where runs A and B (two backends, or one, of one float64 config) part, and the likely cause.
    work_dir: where the replays go (default: a temporary directory, removed after)."""
    a, b = Path(run_a), Path(run_b)
    raw = same_config(a, b)
    backends = (run_facts(a)["backend"], run_facts(b)["backend"])
    location = Location((a, b), backends)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="parity-locate-") as scratch:
            return _locate(location, raw, Path(scratch), models or {})
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return _locate(location, raw, Path(work_dir), models or {})


def _locate(location: Location, raw: dict[str, Any], work: Path, models: dict[str, Any]) -> Location:
    from paritykit.diagnosis import diagnose

    a, b = location.runs
    precision = raw["train"]["precision"]
    init = a / "init.safetensors"
    if not init.is_file():
        raise UserError(f"{a} has no init.safetensors; the locator replays from a run's initial weights")
    checkpoints = run_checkpoints(a)
    if precision != "fp64":
        raw = copy.deepcopy(raw)
        raw["train"]["precision"] = "fp64"
        location.notes.append(f"{precision} runs: located in float64 from the same initial weights (docs/locate.md)")
        checkpoints = []  # A's checkpoints hold float32 state; the float64 replay starts from init
    raw["train"]["verbose"], raw["train"]["log_every"], raw["train"]["loggers"] = 0, 0, []
    replay = Replayer(raw, init, work, models)
    config = config_from_dict(raw)
    if starts_apart(a, b, precision, location):
        return location
    if precision != "fp64" and recorded_schedule_parts(a, b, location):
        location.diagnoses = diagnose(location, config, a, b)
        return location
    update, found_by = candidate_update(a, b, precision, replay, location)
    location.found_by = found_by
    if update is None:
        return location
    if found_by.startswith("step") and update > 1 and not parted_schedule(a, b, update):
        # A step's loss and gradient norm are measured before its update: a difference first seen
        # there may have been made by the update before. That one is tried first.
        earlier = instrument(location, replay, config, update - 1, checkpoints, precision, init, models)
        if not all(q.ok for q in earlier):
            update, location.quantities = update - 1, earlier
            location.found_by += f"; the update before them, {update}, already parts"
    if not location.quantities:
        location.quantities = instrument(location, replay, config, update, checkpoints, precision, init, models)
    location.update = update
    location.quantities.sort(key=lambda q: ORDER.index(q.stage))
    location.diagnoses = diagnose(location, config, a, b)
    return location


def starts_apart(a: Path, b: Path, precision: str, location: Location) -> bool:
    """Runs from different initial weights part before any update: beyond 1e-10 in float64, beyond
    two float32 ulps otherwise (a one-ulp perturbation is the same start)."""
    if not (b / "init.safetensors").is_file():
        return False
    wa, wb = load_weights(a / "init.safetensors"), load_weights(b / "init.safetensors")
    limit = FLOAT64_RTOL if precision == "fp64" else 2.0**-22
    for name in sorted(set(wa) & set(wb)):
        rel = relative(wa[name], wb[name], floor=1e-30)  # a zero nudged one ulp is a denormal
        location.quantities.append(Measured("initial weights", name, 0.0 if rel <= limit else rel, f"rel {rel:.3g}"))
    if all(q.ok for q in location.quantities):
        location.quantities.clear()
        return False
    location.update, location.found_by = 0, "init.safetensors differ: the runs start from different weights"
    return True


def recorded_schedule_parts(a: Path, b: Path, location: Location) -> bool:
    """Outside float64 the lr and momentum are still torch's to half a float32 ulp, and the fp16 loss
    scale identical: the first update where a record breaks that is located from the records (a
    float64 replay has no loss scale to show)."""
    limits = {"lr": 2.0**-23, "momentum": 2.0**-23, "loss_scale": 0.0}
    for n, (sa, sb) in enumerate(zip(step_records(a), step_records(b)), start=1):
        parted = [key for key, limit in limits.items() if key in sa and relative(sa[key], sb.get(key, np.nan)) > limit]
        if parted:
            location.update, location.found_by = n, f"step {n}'s {' and '.join(parted)} records differ"
            location.quantities = [
                Measured("hyper-parameter", key, relative(sa[key], sb[key]), "recorded", (sa[key], sb[key]))
                for key in parted
            ]
            return True
    return False


def parted_schedule(a: Path, b: Path, update: int) -> bool:
    """Whether step `update`'s lr, momentum or loss scale differ (those belong to that update itself)."""
    sa, sb = step_records(a)[update - 1], step_records(b)[update - 1]
    return any(key in sa and relative(sa[key], sb.get(key, np.nan)) > FLOAT64_RTOL for key in STEP_KEYS[2:])


def instrument(
    location: Location,
    replay: Replayer,
    config: Config,
    update: int,
    checkpoints: list[Path],
    precision: str,
    init: Path,
    models: dict[str, Any],
) -> list[Measured]:
    """One update on both backends from the same state, every quantity in computing order."""
    from loopspec.data import load_dataset

    backend, usable = replay_side(location, update, checkpoints if precision == "fp64" else None)
    by_step = {int(c.name.removeprefix("step-")): c for c in usable + replay.checkpoints(backend)}  # step_name's
    earlier = [step for step in by_step if step <= update - 1]
    begin = by_step[max(earlier)] if earlier else None
    after: list[Optional[Path]] = [None, None]
    replayer = location.backends.index(backend)
    if update > 1 and (begin is None or load_checkpoint(begin).step < update - 1):
        replayed = replay.run(backend, update, begin, save_before=True)  # through update - 1 to update
        after[replayer] = replayed
        start: Optional[Path] = replayed.parent / step_name(update - 1)
    else:
        start = begin if update > 1 else None
    after_a, after_b = (
        done if done is not None else replay.run(side, update, start) for side, done in zip(location.backends, after)
    )
    before = load_checkpoint(start).prefixed("model") if start is not None else load_weights(init)
    quantities: list[Measured] = []
    num_train = len(load_dataset(config.data).y_train) if (config.data.name != "arrays" or config.data.path) else 0
    if num_train:
        rows, forward_pass, where = batch_of(config, start, num_train)
        quantities += probe_update(config, before, rows, forward_pass, models)
        location.probe = (config, before, rows, forward_pass, models)
    quantities += compare_update(config, before, after_a, after_b, update)
    quantities.sort(key=lambda q: ORDER.index(q.stage))
    if num_train:
        location.notes.append(f"update {update}: {where}; batch order and parity dropout masks shared by construction")
    if backend != location.backends[0]:
        location.notes.append(f"the state before update {update} replayed by B ({backend}): the cheaper replay")
    return quantities


def candidate_update(
    a: Path, b: Path, precision: str, replay: Replayer, location: Location
) -> tuple[Optional[int], str]:
    """The first update that parts: from the records in float64; from float64 replays otherwise,
    and for state the records do not show (BatchNorm buffers), by bisection over replays."""
    if precision == "fp64":
        steps_a, steps_b = step_records(a), step_records(b)
        first = first_parted_step(steps_a, steps_b)
        if first is not None:
            return first, f"step {first}'s records differ"
        hidden = hidden_state_parted(a, b)
        if hidden is None:
            return None, f"{len(steps_a)} updates, their records, validation metrics and final tensors"
        total = len(steps_a)
        return bisect(replay, location.backends, total, f"{hidden} differs while every step record agrees")
    total = len(step_records(a))
    return bisect(replay, location.backends, total, f"replayed in float64 over {total} updates")


def bisect(replay: Replayer, backends: tuple[str, str], total: int, reason: str) -> tuple[Optional[int], str]:
    """The first update after which both backends, from the same initial weights, hold different
    state: compared through each replay's checkpoint (all tensors) and records."""

    def parted(update: int) -> bool:
        ca, cb = (load_checkpoint(replay.run(backend, update, None)) for backend in backends)
        tensors = any(relative(ca.tensors[n], cb.tensors[n]) > FLOAT64_RTOL for n in set(ca.tensors) & set(cb.tensors))
        runs = [c.path.parent.parent for c in (ca, cb)]
        return tensors or first_parted_step(step_records(runs[0]), step_records(runs[1])) is not None

    if not parted(total):
        return None, f"{reason}; no difference in the replayed state after {total} updates"
    low, high = 0, total  # agrees after `low` updates, parts after `high`
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if parted(middle) else (middle, high)
    return high, f"{reason}; the replayed state first parts after update {high}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="parity-locate", description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--work-dir", help="keep the replays here (default: a temporary directory)")
    parser.add_argument("--json", help="also write the located quantities to this JSON file")
    args = parser.parse_args(argv)
    try:
        location = locate(args.run_a, args.run_b, args.work_dir)
    except UserError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(location.render())
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "update": location.update,
                    "found_by": location.found_by,
                    "diagnoses": location.diagnoses,
                    "quantities": [[q.stage, q.name, q.rel] for q in location.quantities],
                },
                indent=1,
            )
        )
    return 0 if location.agree else 1


class CallableModule(types.ModuleType):
    """`paritykit.locate(run_a, run_b)` calls locate() even once this module is imported, when the
    package's attribute `locate` is the module itself (Python sets it on import)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Location:
        return locate(*args, **kwargs)


sys.modules[__name__].__class__ = CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
