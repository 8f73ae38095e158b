"""Datasets, file loaders, the seeded split and batch order, parity-mode dropout masks."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loopspec import data as data_module
from loopspec.batching import batches_per_epoch, epoch_order, train_batches
from loopspec.config import DataConfig
from loopspec.data import INTRUSION_FEATURES, load_dataset, make_intrusion, split_indices
from loopspec.errors import DataError


def test_intrusion_is_shaped_like_nsl_kdd() -> None:
    data = load_dataset(DataConfig(name="intrusion", num_samples=20000))
    assert data.x_train.shape[1] == 41 == len(INTRUSION_FEATURES)
    positive_rate = np.concatenate([data.y_train, data.y_val]).mean()
    assert 0.05 < positive_rate < 0.07
    # Standardised with training statistics only: exact on train, approximate on val.
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-10)
    assert np.abs(data.x_val.mean(axis=0)).max() > 1e-6
    assert data.num_classes == 2 and data.input_shape == (41,)


def test_intrusion_has_informative_and_noise_features() -> None:
    x, y = make_intrusion(20000, seed=0)
    mean_gap = np.abs(x[y == 1].mean(0) - x[y == 0].mean(0)) / (x.std(0) + 1e-12)
    assert (mean_gap > 0.5).sum() >= 5  # informative
    assert (mean_gap < 0.05).sum() >= 10  # noise
    assert x[:, INTRUSION_FEATURES.index("num_outbound_cmds")].std() == 0  # constant, as in NSL-KDD


def test_generated_data_is_seeded() -> None:
    a = load_dataset(DataConfig(name="synthetic_images", num_samples=100, seed=3))
    b = load_dataset(DataConfig(name="synthetic_images", num_samples=100, seed=3))
    c = load_dataset(DataConfig(name="synthetic_images", num_samples=100, seed=4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape[1:] == (3, 16, 16)  # NCHW


def test_digits_is_the_bundled_real_dataset() -> None:
    data = load_dataset(DataConfig(name="digits"))
    assert len(data.y_train) + len(data.y_val) == 1797
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_digits_are_read_from_sklearns_file_as_load_digits_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digits come from scikit-learn's shipped file without importing it (a second of start-up), and
    equal load_digits' arrays; where the file is not found, or holds another format, load_digits itself
    gives the same."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, loopspec.data as d; d._digits_raw(); print('sklearn' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False", loaded.stderr
    from sklearn.datasets import load_digits

    bunch = load_digits()
    read = [data_module._digits_raw()]
    other_columns, not_gzip = tmp_path / "digits.csv.gz", tmp_path / "plain.csv.gz"
    with gzip.open(other_columns, "wt", encoding="utf-8") as text:
        text.write("1,2,3\n4,5,6\n")
    not_gzip.write_text("0," * 64 + "0\n")
    damaged, empty = tmp_path / "damaged.csv.gz", tmp_path / "empty.csv.gz"
    packed = bytearray(gzip.compress(("0," * 64 + "0\n").encode() * 200))
    packed[20:60] = bytes(40)  # the header intact, the deflate stream broken: zlib.error
    damaged.write_bytes(bytes(packed))
    empty.write_bytes(gzip.compress(b""))
    for found in (None, other_columns, not_gzip, damaged, empty):
        monkeypatch.setattr(data_module, "digits_file", lambda found=found: found)
        read.append(data_module._digits_raw())
    for x, y in read:
        assert x.dtype == np.float64 and y.dtype == np.int64
        np.testing.assert_array_equal(x, bunch.images.reshape(-1, 1, 8, 8))
        np.testing.assert_array_equal(y, bunch.target)


def test_split_is_seeded_and_disjoint() -> None:
    train, val = split_indices(1000, 0.2, seed=1)
    assert len(val) == 200 and len(train) == 800
    assert not set(train) & set(val)
    np.testing.assert_array_equal(split_indices(1000, 0.2, seed=1)[1], val)
    assert not np.array_equal(split_indices(1000, 0.2, seed=2)[1], val)


def test_batch_order_depends_only_on_seed_and_epoch() -> None:
    np.testing.assert_array_equal(epoch_order(50, 0, 1), epoch_order(50, 0, 1))
    assert not np.array_equal(epoch_order(50, 0, 1), epoch_order(50, 0, 2))
    np.testing.assert_array_equal(epoch_order(50, 0, 1, shuffle=False), np.arange(50))
    batches = train_batches(50, 16, 0, 1)
    assert [len(b) for b in batches] == [16, 16, 16, 2] and batches_per_epoch(50, 16) == 4
    assert sorted(np.concatenate(batches)) == list(range(50))
    dropped = train_batches(50, 16, 0, 1, drop_last=True)
    assert [len(b) for b in dropped] == [16, 16, 16] and batches_per_epoch(50, 16, drop_last=True) == 3


# ---------------------------------------------------------------------------- files


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory(tmp_path: Path, compress: bool) -> None:
    suffix = ".gz" if compress else ""
    rng = np.random.default_rng(0)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (60, 28, 28)), compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 60), compress)
    data = load_dataset(DataConfig(name="idx", path=str(tmp_path), val_fraction=0.25))
    assert data.x_train.shape == (45, 1, 28, 28) and data.x_val.shape == (15, 1, 28, 28)
    assert data.x_train.max() <= 1.0


def test_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(name="idx", path=str(tmp_path / "nowhere")))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 28, 28)), False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\[.gz\] not found"):
        load_dataset(DataConfig(name="idx", path=str(tmp_path)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(9), False)
    with pytest.raises(DataError, match="expected 10 labels"):
        load_dataset(DataConfig(name="idx", path=str(tmp_path)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0a\x01")
    with pytest.raises(DataError, match="header promises shape"):
        load_dataset(DataConfig(name="idx", path=str(tmp_path)))


def test_cifar10_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in (1, 2):
        with open(tmp_path / f"data_batch_{i}", "wb") as out:
            pickle.dump(
                {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))},
                out,
            )
    data = load_dataset(DataConfig(name="cifar10", path=str(tmp_path), val_fraction=0.25))
    assert data.x_train.shape == (30, 3, 32, 32) and data.num_classes == 10
    with open(tmp_path / "data_batch_3", "wb") as out:
        pickle.dump({b"data": np.zeros((5, 100), dtype=np.uint8), b"labels": [0] * 5}, out)
    with pytest.raises(DataError, match=r"expected data \(N, 3072\)"):
        load_dataset(DataConfig(name="cifar10", path=str(tmp_path)))


class RunsACommand:
    """What a crafted pickle does: unpickling calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar10_batch_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "the command ran"
    with open(tmp_path / "data_batch_1", "wb") as out:
        pickle.dump({b"data": RunsACommand(marker), b"labels": [0]}, out)
    with pytest.raises(DataError, match=r"data_batch_1 is not a CIFAR-10 python batch \(posix.system is not part of"):
        load_dataset(DataConfig(name="cifar10", path=str(tmp_path)))
    assert not marker.exists()


def test_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=(40, 3)), rng.integers(0, 2, 40)])
    path = tmp_path / "flows.csv"
    path.write_text("a,b,c,attack\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in rows) + "\n")
    data = load_dataset(DataConfig(name="csv", path=str(path), label_column="attack", val_fraction=0.25))
    assert data.x_train.shape == (30, 3) and data.num_classes == 2
    with pytest.raises(DataError, match="label column 'label' not found; columns: a, b, c, attack"):
        load_dataset(DataConfig(name="csv", path=str(path)))
    path.write_text("a,b,label\n1,nan,0\n2,3,1\n")
    with pytest.raises(DataError, match="NaN/inf"):
        load_dataset(DataConfig(name="csv", path=str(path)))
    path.write_text("a,b,label\n1,2,0.5\n2,3,1\n")
    with pytest.raises(DataError, match="non-negative integer class ids"):
        load_dataset(DataConfig(name="csv", path=str(path)))


def test_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(20, 8, 8)),
        y_train=rng.integers(0, 3, 20),
        x_val=rng.normal(size=(5, 8, 8)),
        y_val=rng.integers(0, 3, 5),
    )
    data = load_dataset(DataConfig(name="npz", path=str(path)))
    assert data.x_train.shape == (20, 1, 8, 8) and data.x_val.shape == (5, 1, 8, 8)
    x = rng.normal(size=(20, 4))
    x[3, 2] = np.nan
    np.savez(path, x_train=x, y_train=np.zeros(20), x_val=rng.normal(size=(5, 4)), y_val=np.ones(5))
    with pytest.raises(DataError, match=r"1 NaN/inf values, first at index \(3, 2\)"):
        load_dataset(DataConfig(name="npz", path=str(path)))
    np.savez(
        path, x_train=rng.normal(size=(20, 4)), y_train=np.zeros(19), x_val=rng.normal(size=(5, 4)), y_val=np.ones(5)
    )
    with pytest.raises(DataError, match="20 samples but 19 labels"):
        load_dataset(DataConfig(name="npz", path=str(path)))
    np.savez(path, x_train=rng.normal(size=(20, 4)), y_train=np.zeros(20))
    with pytest.raises(DataError, match="lacks x_val, y_val"):
        load_dataset(DataConfig(name="npz", path=str(path)))
    np.savez(
        path, x_train=rng.normal(size=(20, 4)), y_train=np.zeros(20), x_val=rng.normal(size=(5, 3)), y_val=np.ones(5)
    )
    with pytest.raises(DataError, match="train samples are"):
        load_dataset(DataConfig(name="npz", path=str(path)))
