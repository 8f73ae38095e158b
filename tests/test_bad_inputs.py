"""Bad input, as a demanding user gives it: one line, exit 2, no traceback, `--out` untouched.

A corpus of bad configs, `--set` values, data files, weight files and output paths (every field's
every declared check, plus the file kinds below), run through both command lines in-process, and
property-based `--set` values from hypothesis. The contract, on both backends:

- exit 0, 2 or 3 only; no traceback (in-process, an unexpected exception fails the test);
- on exit 2, exactly one line on stderr, and the run directory exactly as it was before.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flaxloop.train
import torchloop.train
from loopspec.cli import run_cli
from loopspec.weights import save_weights
from parity_tests.schedule_configs import FULL
from tests.test_config_rules import CASES, flatten

FITS = {"torch": torchloop.train.fit, "jax": flaxloop.train.fit}
BASE = [
    "--set",
    "data.num_samples=200",
    "--set",
    "model.hidden=[8,4]",
    "--set",
    "train.epochs=1",
    "--set",
    "train.max_steps=2",
    "--set",
    "train.log_every=0",
    "--set",
    "data.batch_size=32",
]
CONFIG = "configs/intrusion_mlp_focal.yaml"

Case = Callable[[Path], list[str]]  # builds its files under a scratch directory, returns the arguments


def set_args(raw: dict) -> list[str]:
    return [arg for item in flatten(raw) for arg in ("--set", item)]


def config_file(text: bytes | str, name: str = "bad.yaml") -> Case:
    def build(scratch: Path) -> list[str]:
        path = scratch / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--config", str(path)]

    return build


def data_file(name: str, content: Callable[[Path], None], filename: str, *extra: str) -> Case:
    def build(scratch: Path) -> list[str]:
        path = scratch / filename
        content(path)
        return [
            "--set",
            f"data.name={name}",
            "--set",
            f"data.path={path}",
            "--set",
            "model.dropout_mode=framework",
            *extra,
        ]

    return build


def weights_file(tensors: Callable[[], dict[str, np.ndarray]] | bytes) -> Case:
    def build(scratch: Path) -> list[str]:
        path = scratch / "init.safetensors"
        if isinstance(tensors, bytes):
            path.write_bytes(tensors)
        else:
            save_weights(path, tensors())
        return ["--init", str(path)]

    return build


def intrusion_weights(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[], dict[str, np.ndarray]]:
    def make() -> dict[str, np.ndarray]:
        from loopspec.config import load_config
        from loopspec.weights import canonical_init
        from torchloop.models import weight_shapes

        config = load_config(CONFIG, [arg for arg in BASE if arg != "--set"])
        tensors = canonical_init(weight_shapes(config.model, (41,), 1), 0)
        change(tensors)
        return tensors

    return make


def write(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def npz(**arrays: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path.write_bytes(buffer.getvalue())

    return make


def gzipped(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(gzip.compress(content))


def idx_dir(images: bytes, labels: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        (path / "train-images-idx3-ubyte").write_bytes(images)
        (path / "train-labels-idx1-ubyte").write_bytes(labels)

    return make


def cifar_dir(entry: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        (path / "data_batch_1").write_bytes(pickle.dumps(entry))

    return make


def set_weight(name: str, value: object) -> Callable[[dict[str, np.ndarray]], None]:
    def change(tensors: dict[str, np.ndarray]) -> None:
        tensors[name] = np.asarray(value) if not callable(value) else value(tensors[name])

    return change


GOOD_IMAGES = b"\x00\x00\x08\x03" + (4).to_bytes(4, "big") + (8).to_bytes(4, "big") * 2 + bytes(4 * 64)
FILE_CASES: dict[str, Case] = {
    # config files
    "config not UTF-8": config_file(b"optimizer:\n  name: \xff\xfe\n"),
    "config document is a list": config_file("[]\n"),
    "config document is 0": config_file("0\n"),
    "config document is a string": config_file("hello\n"),
    "duplicate YAML keys": config_file("optimizer:\n  lr: 0.1\n  lr: 0.2\n"),
    "duplicate sections": config_file("optimizer: {}\noptimizer: {}\n"),
    "unparsable YAML": config_file("model: [unclosed\n"),
    "unparsable TOML": config_file("[model\n", "bad.toml"),
    "config with a .txt suffix": config_file("seed: 1\n", "bad.txt"),
    "config that is a directory": lambda scratch: ["--config", str(scratch)],
    "missing config": lambda scratch: ["--config", str(scratch / "missing.yaml")],
    "section given a value": config_file("optimizer: 3\n"),
    "a config.json with Infinity": config_file('{"optimizer": {"lr": Infinity}}', "config.json"),
    "a config.json with NaN": config_file('{"optimizer": {"lr": NaN}}', "config.json"),
    "a YAML .inf lr": config_file("optimizer:\n  lr: .inf\n"),
    "a huge seed": config_file(f"seed: {2**64}\n"),
    # data files
    "csv not UTF-8": data_file("csv", write(b"a,label\n\xff,1\n"), "d.csv"),
    "csv without the label column": data_file("csv", write(b"a,b\n1,2\n"), "d.csv"),
    "csv with text": data_file("csv", write(b"a,label\nx,1\n"), "d.csv"),
    "csv with a NaN": data_file("csv", write(b"a,label\nnan,1\n1,0\n"), "d.csv"),
    "empty csv": data_file("csv", write(b""), "d.csv"),
    "csv that is a directory": data_file("csv", lambda path: path.mkdir(), "d.csv"),
    "empty npz": data_file("npz", write(b""), "d.npz"),
    "truncated npz": data_file(
        "npz",
        lambda path: (
            npz(x_train=np.ones((4, 3)), y_train=np.zeros(4), x_val=np.ones((2, 3)), y_val=np.zeros(2))(path)
            or path.write_bytes(path.read_bytes()[:100])
        ),
        "d.npz",
    ),
    "object-dtype npz": data_file(
        "npz",
        npz(x_train=np.array([object()] * 4), y_train=np.zeros(4), x_val=np.ones((2, 3)), y_val=np.zeros(2)),
        "d.npz",
    ),
    "npz missing arrays": data_file("npz", npz(x_train=np.ones((4, 3))), "d.npz"),
    "npy instead of npz": data_file(
        "npz", lambda path: np.save(path.with_suffix(""), np.ones(3)) or path.with_suffix(".npy").rename(path), "d.npz"
    ),
    "npz with NaN features": data_file(
        "npz",
        npz(x_train=np.full((4, 3), np.nan), y_train=np.zeros(4), x_val=np.ones((2, 3)), y_val=np.zeros(2)),
        "d.npz",
    ),
    "npz with fractional labels": data_file(
        "npz", npz(x_train=np.ones((4, 3)), y_train=np.full(4, 0.5), x_val=np.ones((2, 3)), y_val=np.zeros(2)), "d.npz"
    ),
    "npz with one class": data_file(
        "npz", npz(x_train=np.ones((4, 3)), y_train=np.zeros(4), x_val=np.ones((2, 3)), y_val=np.zeros(2)), "d.npz"
    ),
    "empty IDX files": data_file("idx", idx_dir(b"", b""), "idx"),
    "truncated IDX images": data_file(
        "idx", idx_dir(GOOD_IMAGES[:20], b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(4)), "idx"
    ),
    "IDX labels short": data_file("idx", idx_dir(GOOD_IMAGES, b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(2)), "idx"),
    "IDX with a bad magic": data_file("idx", idx_dir(b"\x01\x02\x03\x04" + bytes(20), b"\x00" * 9), "idx"),
    "corrupt gzip IDX": data_file(
        "idx",
        lambda path: (
            path.mkdir()
            or (path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + bytes(10))
            or (path / "train-labels-idx1-ubyte").write_bytes(bytes(9))
        ),
        "idx",
    ),
    "empty gzip IDX": data_file(
        "idx",
        lambda path: (
            path.mkdir()
            or (path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b""))
            or (path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b""))
        ),
        "idx",
    ),
    "missing IDX folder": data_file("idx", lambda path: None, "idx"),
    "CIFAR batch that is not a pickle": data_file(
        "cifar10", lambda path: path.mkdir() or (path / "data_batch_1").write_bytes(b"not a pickle"), "cifar"
    ),
    "CIFAR batch without labels": data_file("cifar10", cifar_dir({b"data": np.zeros((2, 3072), np.uint8)}), "cifar"),
    "CIFAR batch of the wrong shape": data_file(
        "cifar10", cifar_dir({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), "cifar"
    ),
    "CIFAR batch holding a set": data_file("cifar10", cifar_dir({b"data": {1, 2}, b"labels": [0]}), "cifar"),
    "empty CIFAR folder": data_file("cifar10", lambda path: path.mkdir(), "cifar"),
    # weight files for --init
    "init not safetensors": weights_file(b"not safetensors at all"),
    "init empty": weights_file(b""),
    "init int32 weights": weights_file(intrusion_weights(set_weight("head.weight", lambda w: w.astype(np.int32)))),
    "init NaN weights": weights_file(intrusion_weights(set_weight("head.bias", np.array([np.nan])))),
    "init inf weights": weights_file(
        intrusion_weights(set_weight("blocks.0.linear.weight", lambda w: np.full_like(w, np.inf)))
    ),
    "init negative running_var": weights_file(
        intrusion_weights(set_weight("blocks.0.norm.running_var", lambda v: -np.ones_like(v)))
    ),
    "init float counter": weights_file(
        intrusion_weights(set_weight("blocks.0.norm.num_batches_tracked", np.array(1.5)))
    ),
    "init wrong shape": weights_file(intrusion_weights(set_weight("head.bias", np.zeros(3)))),
    "init missing tensor": weights_file(intrusion_weights(lambda tensors: tensors.pop("head.bias"))),
    "init extra tensor": weights_file(intrusion_weights(set_weight("extra.weight", np.zeros(2)))),
    "init that is a directory": lambda scratch: ["--init", str(scratch)],
    "init missing": lambda scratch: ["--init", str(scratch / "missing.safetensors")],
    # the run directory
    "out is a file": lambda scratch: ["--out", str(scratch / "file")] if (scratch / "file").write_text("x") else [],
    "out is empty": lambda scratch: ["--out", ""],
    "out is read-only": lambda scratch: read_only_out(scratch),
}


def read_only_out(scratch: Path) -> list[str]:
    locked = scratch / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return ["--out", str(locked / "run")]


def overrides_on_defaults(raw: dict) -> Case:
    """The bad values on top of the defaults (an empty config file), as test_config_rules builds them."""

    def build(scratch: Path) -> list[str]:
        (scratch / "defaults.yaml").write_text("")
        return ["--config", str(scratch / "defaults.yaml"), *set_args(raw)]

    return build


SET_CASES: dict[str, Case] = {f"--set {what}": overrides_on_defaults(raw) for what, raw in CASES}
CORPUS = {**FILE_CASES, **SET_CASES}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run(backend: str, args: list[str], out: Path, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    if "--out" not in args:
        args = [*args, "--out", str(out)]
    if "--config" not in args:
        args = ["--config", CONFIG, *args]
    code = run_cli(f"python -m {backend}loop.train", backend, FITS[backend], [*args[:2], *BASE, *args[2:]])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("backend", list(FITS))
@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_input_is_one_line_and_exit_2(
    name: str, backend: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if os.geteuid() == 0 and name == "out is read-only":
        pytest.skip("root ignores directory permissions")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"an earlier run": True}))
    before = snapshot(out)
    try:
        code, err = run(backend, CORPUS[name](tmp_path), out, capsys)
    except SystemExit as exit_:  # argparse's usage errors
        code, err = exit_.code, capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"{name}: exit {code}: {err}"
    assert len(err) == 1 and "error:" in err[0], f"{name}: {err}"
    assert snapshot(out) == before, f"{name}: the run directory changed"


def test_the_corpus_is_large_and_covers_every_kind() -> None:
    assert len(CORPUS) >= 200
    kinds = ("config", "csv", "npz", "IDX", "CIFAR", "init", "out", "--set")
    assert all(any(kind in name for name in CORPUS) for kind in kinds)


KEYS = sorted({item.split("=")[0] for _, raw in CASES for item in flatten(raw)})
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 300), max_size=4),
    st.lists(st.floats(-2, 2), max_size=3),
)


@pytest.mark.parametrize("backend", list(FITS))
@settings(max_examples=60 if FULL else 10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_random_overrides_never_end_in_a_traceback(
    backend: str, overrides: list, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / f"run-{abs(hash(str(overrides)))}"
    args = [arg for key, value in overrides for arg in ("--set", f"{key}={json.dumps(value)}")]
    code, err = run(backend, args, out, capsys)
    assert code in (0, 2, 3), (overrides, code, err)
    if code == 2:
        assert len(err) == 1, (overrides, err)
        assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("backend", list(FITS))
@pytest.mark.parametrize("where", ["loopspec.run.write_json_atomic", "loopspec.loop.save_weights"])
def test_a_full_disk_is_one_line_and_exit_2(
    where: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Writing config.json (before training) or the weights (during it) fails as a full disk does."""

    def full(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(where, full)
    code, err = run(backend, [], tmp_path / "run", capsys)
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
