"""Float32 verdicts measured on the machine that runs them: the trajectory's own sensitivity.

Two correct float32 implementations round differently from the first operation on, and
training amplifies those differences at a rate the config sets (Adam on near-zero gradients,
max-pool near-ties, high learning rates). How far apart two correct runs are after t steps
therefore depends on the config, the CPU's instruction set and the math libraries: no fixed
tolerance holds on every machine. The verdict here is relative to a yardstick measured in the
same process, on the same machine:

- **Envelope.** Each backend trains the config from the initial weights, and again in each of
  the ENVELOPE_RUNS: from the same weights with every parameter moved by one float32 ulp, up or
  down at random (seeded), the inputs moved likewise, each micro-batch's rows in reverse order or
  not, and torch on its other family of CPU kernels. One ulp per weight is the difference one
  update of another correct implementation leaves behind, so each pair's per-step relative
  difference is what rounding alone does to this config here. A perturbation at the start alone
  would keep every later operation's rounding close to the reference's, while two implementations
  round every reduction over the batch differently at every step; the reversed rows measure that
  fresh noise where training amplifies it (Adam on a gradient that is zero in exact arithmetic) or
  where little is amplified and one large reduction dominates (a loss over thousands of tokens).
  The envelope at step t is the largest self-divergence of any of these runs up to step t (a
  running maximum: a perturbed run that happens to cross the reference at step t says nothing
  about step t+1), and never less than FLOOR, one float32 ulp.
- **Verdict.** The torch-vs-JAX difference of every judged quantity at every step, epoch and
  tensor must stay within MULTIPLE times the envelope. The gradient norm also gets what the two
  backends' norm reductions alone put between their records, measured here on the run's own tensor
  shapes (norm_rounding): each backend always reduces its own way, so no self-divergence run sees it,
  and torch's float32 norm on the CPU is 1e-6 to 3e-6 from the exact one where JAX's is 1e-8.

Why MULTIPLE = 23: two different implementations inject fresh noise at every operation of every
step, which the perturbed draws reproduce only in part (the reversed rows for the reductions over
the batch). With one draw in the reference's order, correct pairs reached 15.4 times the envelope
and the weakest planted difference 34 times (a biased running variance, two threads); 23 was
their geometric middle. With the two draws of ENVELOPE_RUNS, correct pairs reach at most 6.3
times the envelope and the weakest planted difference 32.5 times (docs/parity.md, "float32"), so
23 now sits 3.6 times above the first and 1.4 times below the second. A
semantic difference (BatchNorm eps, Adam's eps inside the square root, biased running variance,
label smoothing applied twice) starts at 1e-5..1e-2 relative, 100x to 100000x an ulp, and the
same amplification carries it (parity_tests/test_float32.py plants each one).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from loopspec.comparison import relative_difference, tensor_relative_difference
from loopspec.config import config_from_dict
from loopspec.data import load_dataset
from loopspec.metrics import read_metrics
from loopspec.schedules import plan_schedule, schedule_horizon
from loopspec.weights import load_weights, save_weights

MULTIPLE = 23.0
HORIZON = 30  # updates judged: the float32 verdict's first updates of the user's run
FLOOR = float(np.finfo(np.float32).eps)  # one ulp: two roundings of the same number differ by this much
PERTURBATION_SEED = 0x0175
# The envelope's perturbed runs of each backend: (perturbation seed, each micro-batch's rows reversed).
# Rounding decides some discrete events (the sign Adam follows on a gradient that is zero in exact
# arithmetic, a ReLU or max-pool tie); one draw may miss what another implementation meets, two draws
# in two summation orders miss it far less often (measured: docs/parity.md, "float32").
ENVELOPE_RUNS = ((PERTURBATION_SEED, True), (11, False))
ENVELOPE_SEEDS = tuple(seed for seed, _ in ENVELOPE_RUNS)
STEP_QUANTITIES = ("loss", "grad_norm", "lr", "momentum")
EXACT_STEP_QUANTITIES = ("lr", "momentum")  # schedules are exact: torch's double rounded once
EXACT_ULPS = 0.5
EPOCH_QUANTITIES = ("train_loss", "val_loss", "val_acc")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
NPZ_DATA_KEYS = ("seed", "batch_size", "eval_batch_size", "shuffle", "drop_last")


def ulps_apart(ours: np.ndarray, reference: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """|ours - reference| in units of `dtype`'s ulp at the reference (0.5: one correct rounding)."""
    reference = np.asarray(reference, dtype=np.float64)
    _, exponent = np.frexp(np.abs(reference))  # |reference| in [2**(exponent-1), 2**exponent)
    ulp = np.ldexp(1.0, exponent - 1 - np.finfo(dtype).nmant)
    return np.abs(np.asarray(ours, dtype=np.float64) - reference) / ulp


def one_ulp(values: np.ndarray, rng: np.random.Generator, keep_zeros: bool = False) -> np.ndarray:
    """Every element moved one float32 ulp, up or down at random (zeros kept when asked)."""
    x32 = values.astype(np.float32)
    direction = np.where(rng.random(values.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
    moved = np.nextafter(x32, direction)
    return np.where(x32 == 0, x32, moved) if keep_zeros else moved


def perturb_weights(tensors: dict[str, np.ndarray], seed: int = PERTURBATION_SEED) -> dict[str, np.ndarray]:
    """Every float parameter moved one float32 ulp; BatchNorm buffers unchanged."""
    rng = np.random.default_rng(seed)
    return {
        name: value
        if name.endswith(BUFFER_SUFFIXES) or not np.issubdtype(value.dtype, np.floating)
        else one_ulp(value, rng)
        for name, value in tensors.items()
    }


@contextlib.contextmanager
def other_torch_kernels() -> Iterator[None]:
    """torch's other family of CPU kernels (oneDNN off when it is on, on when it is off): a second
    correct implementation, whose convolutions round each output position differently."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's note about TF32 on Intel GPUs
        with torch.backends.mkldnn.flags(enabled=not torch.backends.mkldnn.enabled):
            yield


def write_perturbed_init(init_file: Path, out_file: Path, seed: int = PERTURBATION_SEED) -> Path:
    save_weights(out_file, perturb_weights(load_weights(init_file), seed), {"perturbation": f"one ulp, seed {seed}"})
    return out_file


def dataset_files(
    raw: dict[str, Any], out: Path, seeds: Sequence[int] = (PERTURBATION_SEED,)
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config reading its dataset from .npz files: as loaded, and once per seed with every
    nonzero input moved one float32 ulp (zeros stay exact, as any pipeline computes them). The
    dataset is loaded once for all of them.

    Moving the inputs makes activations that were near-ties in a max-pool window (or at a
    ReLU's kink) resolve the way another correct kernel's rounding may resolve them.
    """
    data = load_dataset(config_from_dict(copy.deepcopy(raw)).data)

    def moved(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # token ids are exact: only floats move
        return x if np.issubdtype(x.dtype, np.integer) else one_ulp(x, rng, keep_zeros=True).astype(np.float64)

    variants = [("data", data.x_train, data.x_val)]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        variants.append((f"data_one_ulp_{seed}", moved(data.x_train, rng), moved(data.x_val, rng)))
    configs = []
    for name, x_train, x_val in variants:
        path = Path(out) / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x_train=x_train, y_train=data.y_train, x_val=x_val, y_val=data.y_val)
        config = copy.deepcopy(raw)
        kept = {key: value for key, value in config.get("data", {}).items() if key in NPZ_DATA_KEYS}
        config["data"] = {**kept, "name": "arrays", "path": str(path)}  # read as they are, any sample shape
        configs.append(config)
    return configs[0], configs[1:]


def first_updates(raw: dict[str, Any], horizon: int) -> dict[str, Any]:
    """The float32 verdict's config: the user's run cut after its first `horizon` applied updates,
    with the schedule it has in the whole run. The schedule's length (T_max, total_steps) is pinned
    to the whole run's, so warm-up, phases and cosine keep their shapes (train.max_steps alone would
    shorten them). In fp32 on one device: precision and replicas do not change the schedule."""
    config = config_from_dict(copy.deepcopy(raw))
    plan = plan_schedule(config, len(load_dataset(config.data).y_train))
    cut = copy.deepcopy(raw)
    schedule = cut.setdefault("schedule", {})
    if config.schedule.name == "cosine":
        schedule["T_max"] = schedule_horizon(config, plan)
    elif config.schedule.name in ("onecycle", "warmup_cosine"):
        schedule["total_steps"] = schedule_horizon(config, plan)
    train = cut.setdefault("train", {})
    train.update(max_steps=min(horizon, plan.total_updates), precision="fp32", devices=1, log_every=0)
    return cut


@dataclass
class Trajectory:
    """What one run recorded: per-step and per-epoch series, initial and final tensors."""

    steps: dict[str, list[float]]
    epochs: dict[str, list[float]]
    init: dict[str, np.ndarray]
    final: dict[str, np.ndarray]

    @classmethod
    def read(cls, run: Path) -> "Trajectory":
        records = read_metrics(Path(run) / "metrics.jsonl")
        steps = {key: [r[key] for r in records["step"] if key in r] for key in STEP_QUANTITIES}
        epochs = {key: [r[key] for r in records["epoch"] if key in r] for key in EPOCH_QUANTITIES}
        return cls(
            steps, epochs, load_weights(Path(run) / "init.safetensors"), load_weights(Path(run) / "final.safetensors")
        )


def first_steps(trajectory: Trajectory, horizon: int) -> Trajectory:
    """The trajectory's step series cut to its first `horizon` updates (epochs and tensors kept)."""
    steps = {key: values[:horizon] for key, values in trajectory.steps.items()}
    return Trajectory(steps, trajectory.epochs, trajectory.init, trajectory.final)


def divergence(a: Trajectory, b: Trajectory) -> dict[tuple[str, str], np.ndarray]:
    """Relative differences per quantity: ('step', 'loss') -> one value per step, ('tensor', name) -> one value."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for unit, series_a, series_b in (("step", a.steps, b.steps), ("epoch", a.epochs, b.epochs)):
        for key in series_a:
            pairs = list(zip(series_a[key], series_b[key]))
            if pairs:
                out[unit, key] = np.array([relative_difference(x, y) for x, y in pairs])
    for name in sorted(set(a.final) & set(b.final)):
        out["tensor", name] = np.array(
            [tensor_relative_difference(a.final[name], b.final[name], a.init[name], b.init[name])]
        )
    return out


def envelope(self_divergences: Sequence[dict[tuple[str, str], np.ndarray]]) -> dict[tuple[str, str], np.ndarray]:
    """The running maximum over steps (epochs) of the largest self-divergence of any backend."""
    keys = set.intersection(*(set(d) for d in self_divergences))
    out = {}
    for key in keys:
        length = min(len(d[key]) for d in self_divergences)
        stacked = np.max([d[key][:length] for d in self_divergences], axis=0)
        out[key] = np.maximum.accumulate(np.nan_to_num(stacked, nan=np.inf)) if length else stacked
    return out


@dataclass
class Check:
    unit: str
    quantity: str
    worst_ratio: float  # max over the horizon of cross / bound; > 1 is a disagreement
    at: Optional[int]  # 1-based step or epoch of the worst ratio (None for a tensor)
    cross: float  # the cross-backend difference there (exact quantities: in float32 ulps)
    envelope: float  # the self-divergence envelope there (exact quantities: the bound, 0.5 ulp)
    exact: bool = False  # judged against one rounding of torch's value, not the envelope
    rounding: float = 0.0  # added to the bound: the backends' own rounding of this quantity (norm_rounding)

    @property
    def agree(self) -> bool:
        return self.worst_ratio <= 1.0


@dataclass
class Verdict:
    multiple: float
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.problems and all(check.agree for check in self.checks)

    @property
    def worst(self) -> Check:
        """The envelope-judged check closest to its bound (the exact ones are not margins)."""
        return max((c for c in self.checks if not c.exact), key=lambda check: check.worst_ratio)

    @property
    def margin(self) -> float:
        """How many times the worst cross-backend difference fits under its envelope bound (> 1 agrees)."""
        return 1.0 / self.worst.worst_ratio if self.worst.worst_ratio > 0 else math.inf

    def render(self) -> str:
        lines = [f"{'quantity':<40} {'worst cross':>12} {'envelope':>10} {'ratio to bound':>15}  at"]
        exact = [check for check in self.checks if check.exact]
        by_ratio = sorted((c for c in self.checks if not c.exact), key=lambda c: -c.worst_ratio)
        for check in exact + by_ratio[:12]:
            where = "-" if check.at is None else f"{check.unit} {check.at}"
            cross, bound = (
                (f"{check.cross:.2f} ulp", f"{check.envelope:g} ulp")
                if check.exact
                else (
                    f"{check.cross:.2e}",
                    f"{check.envelope:.2e}" + (f" +{check.rounding:.1e}" if check.rounding else ""),
                )
            )
            lines.append(
                f"{check.unit + ' ' + check.quantity:<40} {cross:>12} {bound:>10} {check.worst_ratio:>15.3f}  {where}"
            )
        lines += [f"problem: {problem}" for problem in self.problems]
        exact_names = " and ".join(check.quantity for check in exact)
        schedule = f"{exact_names} at most {EXACT_ULPS:g} float32 ulp from torch's; " if exact else ""
        rounded = "".join(f", {c.quantity} plus the backends' own rounding" for c in self.checks if c.rounding)
        lines.append(
            f"{'AGREE' if self.agree else 'DISAGREE'}: {schedule}the rest within {self.multiple:g} x the "
            f"self-divergence envelope{rounded} (margin {self.margin:.3g})"
        )
        return "\n".join(lines)


def judge(
    cross: dict[tuple[str, str], np.ndarray],
    bounds: dict[tuple[str, str], np.ndarray],
    multiple: float = MULTIPLE,
    floor: float = FLOOR,
    rounding: Optional[dict[tuple[str, str], float]] = None,
) -> Verdict:
    """Each quantity's cross-backend differences against `multiple` times its envelope (at least
    `floor`), plus its `rounding` where given."""
    verdict = Verdict(multiple)
    for key in sorted(cross):
        unit, quantity = key
        if key not in bounds:
            verdict.problems.append(f"{unit} {quantity}: no self-divergence measured")
            continue
        length = min(len(cross[key]), len(bounds[key]))
        if len(cross[key]) != len(bounds[key]):
            verdict.problems.append(f"{unit} {quantity}: {len(cross[key])} values against {len(bounds[key])} measured")
        values, env = cross[key][:length], np.maximum(bounds[key][:length], floor)
        if length == 0:
            continue
        allowance = (rounding or {}).get(key, 0.0)
        ratios = np.nan_to_num(values, nan=np.inf) / (multiple * env + allowance)
        worst = int(np.argmax(ratios))
        verdict.checks.append(
            Check(
                unit,
                quantity,
                float(ratios[worst]),
                None if unit == "tensor" else worst + 1,
                float(values[worst]),
                float(env[worst]),
                rounding=allowance,
            )
        )
    return verdict


def exact_checks(reference: Trajectory, other: Trajectory) -> list[Check]:
    """The learning rate and momentum: pure functions of the update count, so `other` must hold
    `reference`'s (torch's double) rounded once to float32, at every step: within EXACT_ULPS."""
    checks = []
    for quantity in EXACT_STEP_QUANTITIES:
        pairs = list(zip(reference.steps[quantity], other.steps[quantity]))
        if not pairs:
            continue
        torch_values, values = np.array(pairs, dtype=np.float64).T
        ulps = np.nan_to_num(ulps_apart(values, torch_values), nan=np.inf)
        worst = int(np.argmax(ulps))
        checks.append(Check("step", quantity, ulps[worst] / EXACT_ULPS, worst + 1, ulps[worst], EXACT_ULPS, True))
    return checks


def norm_samples(*runs: Trajectory) -> list[list[np.ndarray]]:
    """Tensor sets shaped and scaled like a run's gradients, for norm_rounding: each run's initial and
    final float weights and what training moved them by."""
    samples = []
    for run in runs:
        names = [
            name for name in sorted(set(run.init) & set(run.final)) if np.issubdtype(run.final[name].dtype, np.floating)
        ]
        samples.append([run.init[name] for name in names])
        samples.append([run.final[name] for name in names])
        samples.append([np.asarray(run.final[name], np.float64) - run.init[name] for name in names])
    return samples


def norm_rounding(samples: Sequence[Sequence[np.ndarray]]) -> float:
    """The largest relative difference, over `samples`, between the float32 global norms torch's and
    JAX's train steps record as grad_norm (torch.nn.utils.get_total_norm, which clip_grad_norm_ uses,
    and optax.tree.norm under jit), computed here: the two reductions' own rounding on this machine."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    jax_norm = jax.jit(optax.tree.norm)
    worst = 0.0
    for sample in samples:
        arrays = [np.asarray(array, np.float32) for array in sample]
        if not arrays:
            continue
        torch_norm = float(torch.nn.utils.get_total_norm([torch.from_numpy(array) for array in arrays]))
        worst = max(worst, relative_difference(torch_norm, float(jax_norm([jnp.asarray(a) for a in arrays]))))
    return worst


def judge_runs(
    cross_pair: tuple[Path, Path], self_pairs: Sequence[tuple[Path, Path]], multiple: float = MULTIPLE
) -> Verdict:
    """Torch-vs-JAX runs (in that order) against the envelope of each backend's reference-vs-perturbed
    runs; the learning rate and momentum against one float32 rounding of torch's values."""
    read = Trajectory.read
    torch_run, jax_run = read(cross_pair[0]), read(cross_pair[1])
    cross = divergence(torch_run, jax_run)
    for quantity in EXACT_STEP_QUANTITIES:
        cross.pop(("step", quantity), None)
    bounds = envelope([divergence(read(a), read(b)) for a, b in self_pairs])
    rounding = {}
    if ("step", "grad_norm") in cross:
        rounding["step", "grad_norm"] = norm_rounding(norm_samples(torch_run, jax_run))
    verdict = judge(cross, bounds, multiple, rounding=rounding)
    verdict.checks += exact_checks(torch_run, jax_run)
    step_counts = {len(read(run).steps["loss"]) for pair in (cross_pair, *self_pairs) for run in pair}
    if len(step_counts) > 1:
        verdict.problems.append(f"the runs made different numbers of steps: {sorted(step_counts)}")
    return verdict


def record_margin(name: str, verdict: Verdict, **extra: Any) -> None:
    """Append the verdict's margin to $PARITY_MARGINS (a JSON-lines file), for the profile report."""
    target = os.environ.get("PARITY_MARGINS")
    if not target:
        return
    worst = verdict.worst
    record = {
        "test": name,
        "profile": os.environ.get("PARITY_PROFILE", "default"),
        "margin": verdict.margin,
        "worst": f"{worst.unit} {worst.quantity}",
        "at": worst.at,
        "agree": verdict.agree,
        **extra,
    }
    with open(target, "a") as handle:
        handle.write(json.dumps(record) + "\n")
