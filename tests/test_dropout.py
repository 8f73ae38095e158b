"""Parity dropout masks: the NumPy specification (loopspec.dropout) is Threefry-2x32-20, and the device
generators of both backends (torchloop.dropout, flaxloop.dropout: every layer from one Threefry
evaluation; the JAX one jitted with the forward pass and rows traced, as the train step runs it)
equal it bit for bit."""

from __future__ import annotations

import atexit
import functools
import json
import os
import platform
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flaxloop import dropout as flax_dropout
from loopspec import dropout as spec
from loopspec import dropout_kernel
from loopspec.errors import UserError
from parity_tests.schedule_configs import FULL
from torchloop import dropout as torch_dropout

# Random123's known-answer vectors for threefry2x32 with 20 rounds: (counter, key) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]
EDGE_RATES = [0.0, 2.0**-32, 0.1, 0.3, 0.5, 1.0 - 2.0**-32, 1.0]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_threefry_matches_the_known_answers_and_jax(counter: tuple, key: tuple, expected: tuple) -> None:
    x0, x1 = (np.array([c], np.uint32) for c in counter)
    assert [int(w[0]) for w in spec.threefry2x32(key, x0, x1)] == list(expected)
    assert [int(w[0]) for w in torch_dropout.threefry2x32(key, *(torch.tensor([c]) for c in counter))] == list(expected)
    assert [int(w[0]) for w in flax_dropout.threefry2x32(key, jnp.asarray(x0), jnp.asarray(x1))] == list(expected)
    # jax.random's own threefry (its primitive) is the same function.
    from jax.extend.random import threefry2x32_p

    theirs = threefry2x32_p.bind(*(jnp.asarray([k], jnp.uint32) for k in key), jnp.asarray(x0), jnp.asarray(x1))
    assert [int(w[0]) for w in theirs] == list(expected)


def layer_lists(shapes: st.SearchStrategy, rates: st.SearchStrategy) -> st.SearchStrategy:
    layer = st.tuples(shapes, rates)
    return st.lists(layer, min_size=1, max_size=3).map(lambda ls: [(f"l{i}", s, r) for i, (s, r) in enumerate(ls)])


def draws(layers: st.SearchStrategy, rows: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {
            "seed": st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1)),
            "forward_pass": st.one_of(st.integers(0, 10), st.integers(0, 2**31 - 1)),
            "rows": rows,
            "layers": layers,
            "dtype": st.sampled_from(["float32", "float64"]),
        }
    )


def specified(d: dict) -> dict[str, np.ndarray]:
    """The NumPy specification's masks, layer by layer."""
    rows, dtype = np.asarray(d["rows"]), np.dtype(d["dtype"])
    masks = {
        name: spec.parity_dropout_mask(d["seed"], layer, d["forward_pass"], rows, shape, rate, dtype)
        for layer, (name, shape, rate) in enumerate(d["layers"])
    }
    for name, shape, _ in d["layers"]:
        assert masks[name].shape == (len(rows), *shape) and masks[name].dtype == np.dtype(d["dtype"])
    return masks


def assert_equal_masks(ours: dict, expected: dict[str, np.ndarray]) -> None:
    assert list(ours) == list(expected)
    for name, mask in expected.items():
        np.testing.assert_array_equal(np.asarray(ours[name]), mask, strict=True)


any_rows = st.lists(st.integers(0, 2**20 - 1), min_size=1, max_size=6, unique=True)
any_layers = layer_lists(
    st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    st.one_of(st.sampled_from(EDGE_RATES), st.floats(0.0, 1.0)),
)


@settings(max_examples=500 if FULL else 100, deadline=None)
@given(d=draws(any_layers, any_rows))
def test_torch_generator_equals_the_specification_bit_for_bit(d: dict) -> None:
    rows = torch.tensor(d["rows"], dtype=torch.int64)
    masks = torch_dropout.parity_dropout_masks(
        d["seed"], d["layers"], getattr(torch, d["dtype"]), d["forward_pass"], rows
    )
    assert_equal_masks({name: mask.numpy() for name, mask in masks.items()}, specified(d))


wide_rows = st.lists(st.integers(0, 2**20 - 1), min_size=1, max_size=40, unique=True)
wide_layers = layer_lists(
    st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple),
    st.one_of(st.sampled_from(EDGE_RATES), st.floats(0.0, 1.0)),
)


@functools.lru_cache(maxsize=None)
def kernel_build(name: str) -> dropout_kernel.Fill | None:
    if name == "c":  # into a directory of its own: a read-only or noexec home must not skip the test
        directory = tempfile.mkdtemp(prefix="dropout-kernel-test-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # shared by the session's tests
        return dropout_kernel.c_fill(Path(directory))
    return dropout_kernel.numba_fill()


def built(name: str) -> dropout_kernel.Fill:
    """One build of loopspec.dropout_kernel's loop, each tested whichever this machine would pick; skipped
    only where its tool is absent (a compiler that is found and fails to build it is a failure)."""
    fill = kernel_build(name)
    if fill is None and name == "c" and dropout_kernel.compiler_command() is not None:
        pytest.fail(f"the C compiler {dropout_kernel.compiler_command()} did not build loopspec/dropout_kernel.c")
    if fill is None:
        pytest.skip({"c": "no C compiler ($CC or cc) on this machine", "numba": "numba is not installed"}[name])
    return fill


@pytest.mark.parametrize("build", ["c", "numba"])
@settings(max_examples=500 if FULL else 100, deadline=None)
@given(d=draws(wide_layers, wide_rows), dtype=st.sampled_from(["float16", "float32", "float64"]))
def test_compiled_masks_equal_the_specification_bit_for_bit(build: str, d: dict, dtype: str) -> None:
    """loopspec.dropout_kernel (what torch draws on the CPU) against the NumPy specification."""
    d = {**d, "dtype": dtype}
    with mock.patch.object(dropout_kernel, "fill", built(build)), np.errstate(over="ignore"):
        # float16 cannot hold 1/(1-rate) near rate 1: inf on both sides
        compiled = spec.parity_dropout_masks(
            d["seed"], d["layers"], np.dtype(dtype), d["forward_pass"], np.asarray(d["rows"])
        )
        assert_equal_masks(compiled, specified(d))


@pytest.mark.parametrize("build", ["c", "numba"])
def test_compiled_masks_at_the_edges_of_the_words(build: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where random draws do not reach: the key at 2**32 - 1 (every uint32 sum wraps) and rates whose
    threshold is exactly one of the words drawn (kept: >=), and the next word up (dropped)."""
    monkeypatch.setattr(dropout_kernel, "fill", built(build))
    seed = forward_pass = 2**32 - 1
    rows, shape = np.array([0, 5, 2**20 - 1]), (9,)
    words = spec.random_words(seed, forward_pass, 3, rows, 9)
    for word in (int(words[1, 4]), int(words[1, 4]) + 1):
        rate = word / 2**32  # exact: a 32-bit integer over a power of two
        assert spec.keep_threshold(rate) == word
        layers = [("a", (2,), 0.5), ("b", (1,), 0.25), ("c", (3,), 0.5), ("d", shape, rate)]
        d = {"seed": seed, "forward_pass": forward_pass, "rows": rows, "layers": layers, "dtype": "float32"}
        compiled = spec.parity_dropout_masks(seed, layers, np.dtype(np.float32), forward_pass, rows)
        assert_equal_masks(compiled, specified(d))
        assert (compiled["d"][1, 4] != 0) == (word == int(words[1, 4]))


def test_the_c_build_is_kept_in_the_cache_and_skipped_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built once into the cache and loaded from there after (the compiler not run again); a command with
    arguments is another build; a missing or failing compiler gives None (numba or NumPy draw the masks
    instead), and leaves no library behind (a failure's note: the next tests)."""
    built("c")  # skips without a compiler
    fill = dropout_kernel.c_fill(tmp_path / "cache")
    command = dropout_kernel.compiler_command()
    assert fill is not None and command is not None
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        dropout_kernel.library_path(tmp_path / "cache", command).name
    ]
    with monkeypatch.context() as patched:
        patched.setattr(dropout_kernel, "compile_library", mock.Mock(side_effect=AssertionError("compiled again")))
        assert dropout_kernel.c_fill(tmp_path / "cache") is not None
    monkeypatch.setenv("CC", f"{os.environ.get('CC') or 'cc'} -w")  # a command with its arguments, as make takes it
    assert dropout_kernel.c_fill(tmp_path / "cache") is not None and len(list((tmp_path / "cache").iterdir())) == 2
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert dropout_kernel.c_fill(tmp_path / "empty") is None and not (tmp_path / "empty").exists()
    monkeypatch.setenv("CC", "false")  # found, and fails
    assert dropout_kernel.c_fill(tmp_path / "failed") is None
    assert [p.suffix for p in (tmp_path / "failed").iterdir()] == [".failed"]
    rows = np.arange(3)
    expected = spec.parity_dropout_mask(7, 0, 2, rows, (5,), 0.5, np.float64)
    drawn = dropout_kernel.masks(
        7, 2, spec.counter_words(7, 2, 0, rows), (5,), spec.keep_threshold(0.5), 2.0, np.float64, fill
    )
    np.testing.assert_array_equal(drawn, expected)


class ScriptCompiler:
    """A shell script standing in for $CC, which counts its runs; CC names it through a symlink, as
    /usr/bin/cc names the compiler that alternatives or a package manager picked."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory, self.runs, self.cache = directory, directory / "runs", directory / "cache"
        self.link = directory / "cc"
        monkeypatch.setenv("CC", f"{shlex.quote(str(self.link))} -w")

    def install(self, name: str, body: str) -> Path:
        program = self.directory / name
        program.write_text(f"#!/bin/sh\necho run >> {shlex.quote(str(self.runs))}\n{body}\n")
        program.chmod(0o755)
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(program)
        return program

    def attempts(self) -> int:
        """Runs so far, after one more start that wants the C build (and gets none)."""
        assert dropout_kernel.c_fill(self.cache) is None
        return self.runs.read_text().count("run") if self.runs.exists() else 0

    def note(self) -> Path:
        (note,) = self.cache.iterdir()
        assert note.suffix == ".failed"
        return note


BROKEN = 'echo "fatal error: stdint.h: No such file" >&2\nexit 1'


def reinstall_keeping_size_and_mtime(program: Path) -> None:
    """What a package manager does that keeps the packaged mtime: only the inode's change time moves."""
    before = program.stat()
    for _ in range(200):  # past the file system's clock tick
        program.write_text(program.read_text())
        os.utime(program, ns=(before.st_atime_ns, before.st_mtime_ns))
        if program.stat().st_ctime_ns != before.st_ctime_ns:
            return
        time.sleep(0.01)
    pytest.skip(f"{program.parent}'s file system keeps change times coarser than 2 s")


def test_a_failed_c_build_runs_once_until_the_compiler_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler that is found and fails is not run at every start: its note in the cache says why. It is
    tried again when the compiler is reinstalled, upgraded or switched, a day later, or when the note is
    deleted."""
    cc = ScriptCompiler(tmp_path, monkeypatch)
    first = cc.install("broken-cc", BROKEN)
    assert (cc.attempts(), cc.attempts()) == (1, 1)
    text = cc.note().read_text()
    assert "stdint.h: No such file" in text and "exited 1" in text and str(first) in text
    first.write_text(first.read_text() + "# upgraded\n")  # another size
    assert (cc.attempts(), cc.attempts()) == (2, 2)
    reinstall_keeping_size_and_mtime(first)
    assert (cc.attempts(), cc.attempts()) == (3, 3)
    cc.install("another-cc", BROKEN)  # the symlink switched to another compiler
    assert (cc.attempts(), cc.attempts()) == (4, 4)
    day_ago = time.time() - dropout_kernel.RETRY_FAILED_AFTER_S - 1
    os.utime(cc.note(), (day_ago, day_ago))
    assert (cc.attempts(), cc.attempts()) == (5, 5)
    cc.note().unlink()
    assert (cc.attempts(), cc.attempts()) == (6, 6)


def test_a_note_names_this_machine_and_every_program_of_the_command(tmp_path: Path) -> None:
    """A cache shared between machines (one home directory on a cluster): another machine's failure does
    not stop this one from building. CC="ccache gcc" is fingerprinted by both programs."""
    first, second = tmp_path / "ccache", tmp_path / "gcc"
    for program in (first, second):
        program.write_text("#!/bin/sh\nexit 1\n")
        program.chmod(0o755)
    command = [str(first), str(second), "-w"]
    fingerprint = dropout_kernel.compiler_fingerprint(command)
    host, *programs = json.loads(fingerprint)
    assert host == f"host {platform.node()}" and [p.split()[0] for p in programs] == [str(first), str(second)]
    note = tmp_path / "kernel.failed"
    note.write_bytes(dropout_kernel.failure_note(command, fingerprint, "exited 1", b"error"))
    assert dropout_kernel.failed_before(note, fingerprint)
    assert not dropout_kernel.failed_before(note, json.dumps(["host elsewhere", *programs]))
    second.write_text("#!/bin/sh\nexit 0\n\n")
    assert not dropout_kernel.failed_before(note, dropout_kernel.compiler_fingerprint(command))
    written = note.stat().st_mtime
    assert not dropout_kernel.failed_before(note, fingerprint, now=written + dropout_kernel.RETRY_FAILED_AFTER_S)
    assert not dropout_kernel.failed_before(note, fingerprint, now=written - 60)  # a clock behind the note's


def test_a_compiler_that_hangs_is_remembered_and_one_killed_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiler past its time limit would cost that limit at every start: noted as a failure. One killed
    by a signal (out of memory, a shutdown) may work next time: no note."""
    monkeypatch.setattr(dropout_kernel, "COMPILE_TIMEOUT_S", 0.5)
    cc = ScriptCompiler(tmp_path, monkeypatch)
    cc.install("hanging-cc", "exec sleep 30")
    started = cc.attempts()  # 0 where the timeout came before the script's first line
    assert cc.attempts() == started and "timed out" in cc.note().read_text()
    cc.note().unlink()
    cc.install("killed-cc", "kill -9 $$")
    assert (cc.attempts(), cc.attempts()) == (started + 1, started + 2)
    assert not list(cc.cache.iterdir())


def test_a_build_that_works_again_removes_the_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The headers installed and the note deleted by hand, or the compiler fixed: the stale note goes."""
    built("c")  # skips without a compiler
    real = dropout_kernel.compiler_command()
    assert real is not None
    cc = ScriptCompiler(tmp_path, monkeypatch)
    cc.install("cc-without-headers", BROKEN)
    assert cc.attempts() == 1 and cc.note().exists()
    cc.install("cc-with-headers", f'exec {shlex.join(real)} "$@"')
    assert dropout_kernel.c_fill(cc.cache) is not None
    (library,) = cc.cache.iterdir()  # the note gone, the library in its place
    assert library.suffix != ".failed" and cc.runs.read_text().count("run") == 2


def test_the_macos_compiler_stub_is_not_run_without_the_command_line_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS's /usr/bin/cc without the Command Line Tools opens an install dialog instead of compiling:
    xcode-select -p says so first, and the masks come from numba or NumPy."""
    assert dropout_kernel.apple_stub_without_tools(["/usr/bin/cc"], "darwin", probe=["false"])
    assert dropout_kernel.apple_stub_without_tools(["/usr/bin/cc"], "darwin", probe=[str(tmp_path / "absent")])
    assert not dropout_kernel.apple_stub_without_tools(["/usr/bin/cc"], "darwin", probe=["true"])
    assert not dropout_kernel.apple_stub_without_tools(["/opt/homebrew/bin/gcc-14"], "darwin", probe=["false"])
    assert not dropout_kernel.apple_stub_without_tools(["/usr/bin/cc"], "linux", probe=["false"])
    cc = ScriptCompiler(tmp_path, monkeypatch)
    cc.install("stub-cc", "exit 0")
    monkeypatch.setattr(dropout_kernel, "apple_stub_without_tools", lambda command: True)
    assert cc.attempts() == 0 and not cc.cache.exists()


@functools.lru_cache(maxsize=None)
def jitted_masks(layers: tuple, dtype: str) -> jax.stages.Wrapped:
    """The JAX masks as the train step computes them, the forward pass and the rows traced (and here the
    seed too, which the step holds as a constant, so that examples share a compilation)."""
    return jax.jit(lambda seed, passes, rows: flax_dropout.parity_dropout_masks(seed, layers, dtype, passes, rows))


# Each (layers, dtype) compiles once (under a second); the seed, forward pass and rows vary freely.
few_layers = st.sampled_from(
    [
        (("a", (7,), 0.3),),
        (("a", (2, 3, 5), 0.5), ("b", (1,), 2.0**-32), ("c", (4,), 1.0)),
        (("a", (3,), 1.0 - 2.0**-32), ("b", (2, 2), 0.1)),
    ]
)


@settings(max_examples=200 if FULL else 25, deadline=None)
@given(d=draws(few_layers, st.lists(st.integers(0, 2**20 - 1), min_size=5, max_size=5, unique=True)))
def test_jax_generator_equals_the_specification_bit_for_bit(d: dict) -> None:
    with jax.enable_x64(d["dtype"] == "float64"):
        masks = jitted_masks(d["layers"], d["dtype"])(
            jnp.uint32(d["seed"]), jnp.int32(d["forward_pass"]), jnp.asarray(np.asarray(d["rows"], np.uint32))
        )
        assert_equal_masks(masks, specified(d))


def test_masks_drawn_in_parts_are_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a compiled loop, large masks are drawn in parts of rows (NumPy's passes stay in cache); the
    parts join to the masks drawn whole."""
    monkeypatch.setattr(dropout_kernel, "fill", None)
    rows = np.random.default_rng(0).permutation(2**20)[:11]
    for wide in ((2, 3, spec.PART_WORDS // 8), (spec.PART_WORDS // 3 - 3,)):  # parts of 1 row; of 3, 3, 3, 2
        layers = [("a", (7,), 0.3), ("b", wide, 0.5), ("c", (4,), 0.1)]
        assert len(rows) * sum(2 * spec.blocks(shape) for _, shape, _ in layers) > spec.PART_WORDS  # in parts
        whole = {
            name: spec.parity_dropout_mask(3, layer, 9, rows, shape, rate, np.float32)
            for layer, (name, shape, rate) in enumerate(layers)
        }
        assert_equal_masks(spec.parity_dropout_masks(3, layers, np.float32, 9, rows), whole)


def test_masks_are_pure_functions_of_their_coordinates() -> None:
    rows = np.arange(64)
    mask = spec.parity_dropout_mask(0, 1, 5, rows, (128,), 0.25)
    np.testing.assert_array_equal(mask, spec.parity_dropout_mask(0, 1, 5, rows, (128,), 0.25))
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs((mask == 0).mean() - 0.25) < 0.02
    for other in ((0, 1, 6), (0, 2, 5), (1, 1, 5)):
        assert (mask != spec.parity_dropout_mask(*other, rows, (128,), 0.25)).mean() > 0.2
    # A shard takes its global rows' masks, reversed rows keep theirs, a row's mask is its own.
    np.testing.assert_array_equal(spec.parity_dropout_mask(0, 1, 5, rows[20:40], (128,), 0.25), mask[20:40])
    np.testing.assert_array_equal(spec.parity_dropout_mask(0, 1, 5, rows[::-1], (128,), 0.25), mask[::-1])
    # A sample's shape only lays its elements out: (8, 16) is (128,) row by row.
    np.testing.assert_array_equal(spec.parity_dropout_mask(0, 1, 5, rows, (8, 16), 0.25).reshape(64, 128), mask)


@pytest.mark.parametrize("rate", EDGE_RATES)
def test_keep_rule_at_the_edge_rates(rate: float) -> None:
    mask = spec.parity_dropout_mask(3, 0, 7, np.arange(256), (256,), rate)
    if rate == 0.0:
        assert (mask == 1.0).all()
    elif rate == 1.0:
        assert (mask == 0.0).all()
    else:
        assert abs((mask == 0).mean() - rate) < 0.01
        assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - rate)}
    assert spec.keep_threshold(rate) == int(np.ceil(rate * 2**32))


def test_what_the_layout_cannot_address_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        spec.keep_threshold(1.5)
    with pytest.raises(ValueError, match="seed"):
        spec.random_words(2**32, 0, 0, np.arange(2), 4)
    with pytest.raises(ValueError, match="row positions"):
        spec.random_words(0, 0, 0, np.array([2**20]), 4)
    with pytest.raises(UserError, match="2\\*\\*20 rows"):
        spec.check_layout([("a", (4,), 0.5)], 2**20 + 1)
    with pytest.raises(UserError, match="4096 dropout layers"):
        spec.check_layout([("a", (4,), 0.5)] * 4097, 8)
