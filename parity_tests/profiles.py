"""Simulated machine profiles for the float32 and mixed-precision verdicts.

Float32 rounding depends on the CPU's instruction set, the math libraries' kernels and the
thread count. A profile changes those for torch (oneDNN's instruction-set cap, oneDNN on or
off, intra-op threads) and for XLA (its instruction-set cap, its runtime, Eigen threads), so
the float32 subset of the suite can be shown to hold on machines other than this one:

    python -m parity_tests.profiles                  # every profile; a margin table at the end
    python -m parity_tests.profiles threads2 sse41   # some of them
    PARITY_PROFILE=sse41 python -m pytest -m float32 # one profile by hand

A profile is applied by the root conftest.py before torch or jax is imported (the settings
are read once, at start-up). Each float32 verdict appends its margin (how many times its worst
cross-backend difference fits under the bound; above 1 agrees) to $PARITY_MARGINS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence


@dataclass(frozen=True)
class Profile:
    description: str
    threads: int = 1  # intra-op threads of each framework
    mkldnn: bool = True  # torch's oneDNN kernels (off: ATen's native ones)
    environment: dict[str, str] = field(default_factory=dict)
    xla_flags: tuple[str, ...] = ()


PROFILES = {
    "default": Profile("this machine: native instruction set, one thread per framework"),
    "threads2": Profile(
        "two intra-op threads in torch and in XLA (Eigen)", threads=2, xla_flags=("--xla_cpu_multi_thread_eigen=true",)
    ),
    "avx": Profile(
        "an AVX machine without AVX2/FMA: oneDNN and XLA capped at AVX",
        environment={"ONEDNN_MAX_CPU_ISA": "AVX"},
        xla_flags=("--xla_cpu_max_isa=AVX",),
    ),
    "sse41": Profile(
        "an SSE4 machine: oneDNN capped at SSE4.1, XLA at SSE4.2",
        environment={"ONEDNN_MAX_CPU_ISA": "SSE41"},
        xla_flags=("--xla_cpu_max_isa=SSE4_2",),
    ),
    "no-onednn": Profile("torch without oneDNN (ATen's native convolutions and matmuls)", mkldnn=False),
    "xla-legacy": Profile(
        "XLA's legacy CPU runtime instead of the thunk runtime", xla_flags=("--xla_cpu_use_thunk_runtime=false",)
    ),
    "xnnpack": Profile("XLA's dots and convolutions through XNNPACK", xla_flags=("--xla_cpu_use_xnnpack=true",)),
}


def current() -> tuple[str, Profile]:
    name = os.environ.get("PARITY_PROFILE", "default")
    if name not in PROFILES:
        raise SystemExit(f"PARITY_PROFILE={name!r} is not a profile; choose from {', '.join(PROFILES)}")
    return name, PROFILES[name]


def apply_environment(profile: Profile) -> None:
    """Set what the frameworks read at start-up; call before importing torch or jax."""
    threads = str(profile.threads)
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ.update(profile.environment)
    flags = [f"--xla_cpu_multi_thread_eigen={'true' if profile.threads > 1 else 'false'}", *profile.xla_flags]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


def apply_torch(profile: Profile) -> None:
    import torch

    torch.set_num_threads(profile.threads)
    torch.backends.mkldnn.enabled = profile.mkldnn


def run_profile(name: str, margins: Path, pytest_args: Sequence[str]) -> int:
    env = {**os.environ, "PARITY_PROFILE": name, "PARITY_MARGINS": str(margins)}
    workers = "1" if PROFILES[name].threads > 1 else "2"  # two threads each would share two cores
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "float32",
        "-n",
        workers,
        "--dist",
        "worksteal",  # an idle worker takes queued tests from the busy one
        "-q",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    print(f"== profile {name}: {PROFILES[name].description}\n$ {' '.join(command)}", flush=True)
    return subprocess.run(command, env=env).returncode


def margin_table(margins: Path) -> str:
    """Markdown: the smallest margin of each test under each profile."""
    rows: dict[str, dict[str, float]] = {}
    for line in margins.read_text().splitlines():
        record = json.loads(line)
        rows.setdefault(record["test"], {})
        previous = rows[record["test"]].get(record["profile"], float("inf"))
        rows[record["test"]][record["profile"]] = min(previous, record["margin"])
    profiles = [name for name in PROFILES if any(name in row for row in rows.values())]
    lines = ["| verdict | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for test, row in rows.items():
        lines.append(f"| {test} | " + " | ".join(f"{row[p]:.3g}" if p in row else "-" for p in profiles) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.profiles", description=__doc__.splitlines()[0])
    parser.add_argument(
        "profiles",
        nargs="*",
        choices=[[], *PROFILES],
        metavar="PROFILE",
        help=f"profiles to run (default: all of {', '.join(PROFILES)})",
    )
    parser.add_argument("--margins", type=Path, help="JSON-lines file for the margins (default: a temporary file)")
    parser.add_argument("--pytest-args", default="", help="extra arguments for pytest, e.g. '-k recipe'")
    args = parser.parse_args(argv)
    margins = args.margins or Path(tempfile.mkdtemp(prefix="parity-profiles-")) / "margins.jsonl"
    failed = [
        name for name in args.profiles or list(PROFILES) if run_profile(name, margins, args.pytest_args.split()) != 0
    ]
    if margins.exists():
        print(f"\nmargins (worst cross-backend difference under its bound; > 1 agrees), from {margins}:\n")
        print(margin_table(margins))
    if failed:
        print(f"\nfailed under: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
