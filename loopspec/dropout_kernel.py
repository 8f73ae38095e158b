"""loopspec.dropout's masks in one compiled loop, for the backends that draw them on the host (torch on
the CPU). The NumPy specification makes about 125 passes over arrays of words, 13 to 14 ns a word on 2
cores; a compiled loop keeps each block in registers from counter to mask value, 1.4 to 3 ns (measured),
and writes the mask directly. Bit-identical to the specification (tests/test_dropout.py compares them).

Two builds of the same loop, the first that this machine has:
- dropout_kernel.c, built once by the system C compiler ($CC, else cc) into the user's cache and loaded
  with ctypes: loading it takes under a millisecond;
- numba (the [torch] extra's), where no C compiler is found: its first call costs 0.5 to 1 s of
  start-up (its registries import scipy.linalg), a tenth of the default recipe's whole run.
Without either, `fill` is None and loopspec.dropout.parity_dropout_masks draws them with NumPy.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from loopspec import dropout as specification

Fill = Callable[[int, int, np.ndarray, int, int, float, np.ndarray], None]
"""fill(k0, k1, counters, sample_size, threshold, scale, out): out[i, j] = scale where word j % 2 of
threefry2x32((k0, k1), (counters[i], j // 2)) >= threshold (< 2**32), else 0; out 2-D, C order, float32
or float64."""

SOURCE = Path(__file__).with_name("dropout_kernel.c")
# Portable flags: the machine code lands in a cache a home directory may share between machines.
COMPILE_FLAGS = ("-O3", "-shared", "-fPIC")
WRITTEN_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # others: float64, then one rounding
LOW = np.uint64(0xFFFFFFFF)
RETRY_FAILED_AFTER_S = 24 * 3600
COMPILE_TIMEOUT_S = 120
FINGERPRINT_LINE = "compiler: "


def cache_directory() -> Path:
    """Where built kernels are kept: $XDG_CACHE_HOME (else ~/.cache, or %LOCALAPPDATA%)/jax-torch-parity."""
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".cache"
    return Path(base) / "jax-torch-parity"


def compiler_command() -> Optional[list[str]]:
    """$CC (which may carry arguments, as make takes it: CC="ccache gcc"), else cc; None where not found."""
    try:
        name, *arguments = shlex.split(os.environ.get("CC") or "cc") or ["cc"]
    except ValueError:  # unbalanced quotes
        return None
    found = shutil.which(name)  # absolute: ./mycc in two folders are two compilers
    return None if found is None else [os.path.abspath(found), *arguments]


def library_path(directory: Path, command: Sequence[str]) -> Path:
    """The built library's file, named by what went into it: the source, the compiler command and its
    arguments (a CC with -march=native builds for this machine only), the flags and the platform."""
    key = "\n".join([SOURCE.read_text(), *command, *COMPILE_FLAGS, platform.machine(), sys.platform])
    suffix = {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")
    digest = hashlib.sha256(key.encode(errors="surrogateescape")).hexdigest()[:16]
    return directory / f"dropout_kernel-{digest}{suffix}"


def build_library(directory: Path) -> Optional[Path]:
    """dropout_kernel.c built into `directory`, or the build already there; None without a C compiler or a
    writable directory. A failed build leaves a note beside where the library would go (failure_note),
    and is not tried again for a day while the compiler and the machine are the ones the note names (a
    broken $CC would otherwise run at every start); deleting the note retries at once."""
    command = compiler_command()
    if command is None:
        return None
    try:
        target = library_path(directory, command)
        if target.exists():
            return target
        failed, fingerprint = target.with_suffix(".failed"), compiler_fingerprint(command)
        if failed_before(failed, fingerprint) or apple_stub_without_tools(command):
            return None
        directory.mkdir(parents=True, exist_ok=True)
        failure = compile_into(target, command)
    except (OSError, ValueError, subprocess.SubprocessError):  # ValueError: a path the file system cannot encode
        return None
    with contextlib.suppress(OSError):  # another user's note in a shared cache: the build stands
        if failure is None:
            failed.unlink(missing_ok=True)
        elif failure.lasting:
            failed.write_bytes(failure_note(command, fingerprint, failure.outcome, failure.stderr))
    return target if failure is None else None


class Failure(NamedTuple):
    outcome: str  # "exited 1", "timed out"
    stderr: bytes
    lasting: bool  # worth a note: not a compiler killed by a signal (out of memory), which may pass next time


def compile_into(target: Path, command: Sequence[str]) -> Optional[Failure]:
    """Compile to a temporary name beside `target` and rename it, so concurrent processes (data-parallel
    ranks, test workers) never load a half-written file; how it failed, or None."""
    handle, partial = tempfile.mkstemp(prefix=".building-", suffix=target.suffix, dir=target.parent)
    os.close(handle)
    try:
        try:
            built = compile_library(command, partial)
        except subprocess.TimeoutExpired as expired:
            return Failure("timed out", expired.stderr or b"", lasting=True)
        if built.returncode != 0:
            return Failure(f"exited {built.returncode}", built.stderr, lasting=built.returncode > 0)
        try:
            os.replace(partial, target)
        except OSError:  # Windows: another process's build is in place and loaded
            if not target.exists():
                raise
        return None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def compile_library(command: Sequence[str], output: str) -> subprocess.CompletedProcess[bytes]:
    """One run of the C compiler on dropout_kernel.c; TimeoutExpired after two minutes."""
    return subprocess.run(
        [*command, *COMPILE_FLAGS, "-o", output, str(SOURCE)], capture_output=True, timeout=COMPILE_TIMEOUT_S
    )


def compiler_fingerprint(command: Sequence[str]) -> str:
    """This machine and the programs the command names as installed now (ccache gcc: both; not what a
    wrapper or shim runs in turn), each by the file its path resolves to and that file's identity, size
    and times: a reinstall, an upgrade or a switched symlink changes it, and so does another machine
    sharing the cache (its compiler may work). One line of JSON, whatever the names hold."""
    parts = [f"host {platform.node()}"]
    for word in command:
        found = shutil.which(word) if not word.startswith("-") else None
        if found is not None:
            real = os.path.realpath(found)
            stat = os.stat(real)
            parts.append(f"{real} {stat.st_dev} {stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}")
    return json.dumps(parts)


def failed_before(note: Path, fingerprint: str, now: Optional[float] = None) -> bool:
    """The note says this build failed less than a day ago with the compiler of this fingerprint. A day,
    not for ever: headers installed later change nothing the fingerprint sees. A note dated ahead of
    this clock (another machine's, skewed) counts as old."""
    try:
        written, lines = note.stat().st_mtime, note.read_bytes().splitlines()
    except OSError:
        return False
    age = (time.time() if now is None else now) - written
    return 0 <= age < RETRY_FAILED_AFTER_S and (FINGERPRINT_LINE + fingerprint).encode() in lines


def failure_note(command: Sequence[str], fingerprint: str, outcome: str, stderr: bytes) -> bytes:
    """What a failed build left in the cache, for whoever wonders why the masks come from numba or NumPy:
    the command, how it ended, the fingerprint failed_before reads back, and the end of its errors."""
    tail = b"\n".join(stderr.splitlines()[-20:])
    header = f"{shlex.join([*command, *COMPILE_FLAGS])} {outcome}; delete this file to try again\n"
    return header.encode(errors="surrogateescape") + (FINGERPRINT_LINE + fingerprint + "\n").encode() + tail + b"\n"


def apple_stub_without_tools(
    command: Sequence[str], system: str = sys.platform, probe: Sequence[str] = ("xcode-select", "-p")
) -> bool:
    """macOS's /usr/bin/cc without the Command Line Tools: a stub that opens an install dialog instead of
    compiling. xcode-select -p (the probe) fails where they are missing."""
    if system != "darwin" or not command[0].startswith("/usr/bin/"):
        return False
    try:
        return subprocess.run(list(probe), capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return True


def c_fill(directory: Optional[Path] = None) -> Optional[Fill]:
    """The C build's fill, loaded with ctypes; None where it cannot be built or loaded."""
    try:
        path = build_library(cache_directory() if directory is None else directory)
    except RuntimeError:  # Path.home() where no home directory can be found
        return None
    if path is None:
        return None
    pointer, u32, i64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int64
    functions = {}
    try:
        library = ctypes.CDLL(str(path))
        for dtype in WRITTEN_DTYPES:
            function = getattr(library, f"fill_{dtype.name}")
            function.argtypes = [u32, u32, pointer, i64, i64, u32, ctypes.c_double, pointer]
            function.restype = None
            functions[dtype] = function
    except (OSError, AttributeError):  # not loadable here (another machine's build in a shared cache)
        return None

    def draw(k0: int, k1: int, counters: np.ndarray, size: int, threshold: int, scale: float, out: np.ndarray) -> None:
        counters = np.ascontiguousarray(counters, np.uint64)
        assert out.flags.c_contiguous and out.shape == (len(counters), size)
        functions[out.dtype](k0, k1, counters.ctypes.data, len(counters), size, threshold, scale, out.ctypes.data)

    return draw


def _four_rounds(x0: Any, x1: Any, r0: int, r1: int, r2: int, r3: int) -> tuple[Any, Any]:
    """Threefry's four rounds between key injections; uint32 arithmetic in uint64 lanes masked to
    32 bits (numba widens uint32 sums). Written out, so the rotations compile to shifts by constants (a
    loop over a table of rotations took twice as long)."""
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r0)) | (x1 >> np.uint64(32 - r0))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r1)) | (x1 >> np.uint64(32 - r1))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r2)) | (x1 >> np.uint64(32 - r2))) & LOW) ^ x0
    x0 = (x0 + x1) & LOW
    x1 = (((x1 << np.uint64(r3)) | (x1 >> np.uint64(32 - r3))) & LOW) ^ x0
    return x0, x1


# Threefry's constants for the numba build, written here because numba's cache is keyed on this file
# alone: taken from loopspec.dropout, a change there would not reach the cached machine code.
FIRST, SECOND = (13, 15, 26, 6), (17, 29, 16, 24)  # the rotations of groups of four rounds 1, 3, 5 and 2, 4
KEY_PARITY = 0x1BD11BDA
assert (FIRST, SECOND) == specification.ROTATIONS and KEY_PARITY == specification.KEY_PARITY
four_rounds: Any = None  # _four_rounds compiled, which numba_fill sets before it compiles _fill_masks


def _fill_masks(k0: Any, k1: Any, counters: Any, sample_size: Any, threshold: Any, scale: Any, out: Any) -> None:
    """out[i, j] = scale if word j % 2 of threefry2x32((k0, k1), (counters[i], j // 2)) >= threshold
    else 0: loopspec.dropout.threefry2x32's rounds and key schedule, one block at a time. The threshold
    compared as uint64 and the row's counter added once: 1.4 ns a word instead of 2.3 (measured)."""
    keep_from = np.uint64(threshold)  # at most 2**32: rate 1 keeps none
    a, b = np.uint64(k0), np.uint64(k1)
    c = a ^ b ^ np.uint64(KEY_PARITY)
    for i in range(counters.shape[0]):
        row = out[i]
        first_word = (np.uint64(counters[i]) + a) & LOW
        for block in range((sample_size + 1) // 2):
            x0, x1 = first_word, (np.uint64(block) + b) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + b) & LOW, (x1 + c + np.uint64(1)) & LOW
            x0, x1 = four_rounds(x0, x1, SECOND[0], SECOND[1], SECOND[2], SECOND[3])
            x0, x1 = (x0 + c) & LOW, (x1 + a + np.uint64(2)) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + a) & LOW, (x1 + b + np.uint64(3)) & LOW
            x0, x1 = four_rounds(x0, x1, SECOND[0], SECOND[1], SECOND[2], SECOND[3])
            x0, x1 = (x0 + b) & LOW, (x1 + c + np.uint64(4)) & LOW
            x0, x1 = four_rounds(x0, x1, FIRST[0], FIRST[1], FIRST[2], FIRST[3])
            x0, x1 = (x0 + c) & LOW, (x1 + a + np.uint64(5)) & LOW
            j = 2 * block
            row[j] = scale if x0 >= keep_from else 0.0
            if j + 1 < sample_size:
                row[j + 1] = scale if x1 >= keep_from else 0.0


def numba_fill() -> Optional[Fill]:
    """_fill_masks compiled by numba, cached on disk where numba finds a writable place (beside this file,
    or the user's cache directory; where it finds none, compiled each run); None without numba."""
    global four_rounds
    # numba's coloured error messages start colorama, whose exit handler writes an ANSI reset to a
    # terminal: a --quiet run must print nothing (tests/test_sinks.py). A user's own setting is kept.
    os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
    try:
        import numba
    except ImportError:  # an interpreter without it (or with too new a NumPy for it)
        return None
    four_rounds = numba.njit(_four_rounds)
    try:
        compiled = numba.njit(cache=True, boundscheck=False)(_fill_masks)
    except (RuntimeError, OSError):  # numba: "cannot cache function ...: no locator available"
        compiled = numba.njit(boundscheck=False)(_fill_masks)
    return compiled


fill: Optional[Fill] = c_fill() or numba_fill()


def masks(
    seed: int,
    forward_pass: int,
    counters: np.ndarray,
    sample_shape: Sequence[int],
    threshold: int,
    scale: float,
    dtype: Any,
    using: Optional[Fill] = None,
) -> np.ndarray:
    """(len(counters), *sample_shape) scaled keep-masks in `dtype` (counters: each row's counter word 0),
    drawn by `using` (default: this machine's `fill`, which must not be None)."""
    using = using or fill
    assert using is not None, "loopspec.dropout_kernel found neither a C compiler nor numba"
    written = np.dtype(dtype) if np.dtype(dtype) in WRITTEN_DTYPES else np.dtype(np.float64)
    out = np.empty((len(counters), math.prod(sample_shape)), written)
    if threshold < specification.WORD:
        using(seed, forward_pass, np.asarray(counters, np.uint64), out.shape[1], threshold, scale, out)
    else:  # rate 1: no 32-bit word reaches 2**32
        out.fill(0)
    return out.reshape(len(counters), *sample_shape).astype(dtype, copy=False)
