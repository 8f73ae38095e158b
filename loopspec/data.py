"""Datasets as NumPy arrays, identical for both backends.

Every loader returns float64 features and int64 labels; each backend casts to its run
dtype. Generated sets are seeded; file loaders check shapes, labels and NaNs before any
training starts, so a bad file fails in the first second, not at step 3000.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopspec.config import DataConfig
from loopspec.errors import DataError
from loopspec.preprocessing import Preprocessing, standardized


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (N, F) tabular or (N, C, H, W) images, float64
    y_train: np.ndarray  # (N,) int64 class ids
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)  # raw samples -> x_train / x_val

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (F,) or (C, H, W)."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4


def load_dataset(cfg: DataConfig) -> Dataset:
    """Build or read the configured dataset, split and standardised, ready to batch."""
    loaders = {
        "intrusion": _intrusion,
        "synthetic_images": _synthetic_images,
        "digits": _digits,
        "idx": _idx,
        "cifar10": _cifar10,
        "csv": _csv,
        "npz": _npz,
        "arrays": _arrays,
        "text": _text,
    }
    try:
        dataset = loaders[cfg.name](cfg)
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        # A file that exists but cannot be read or decoded: name it, the problem, and what was expected.
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise DataError(f"cannot read data.path {cfg.path} as {cfg.name} data: {reason}") from None
    check_dataset(dataset)
    return dataset


# ---------------------------------------------------------------------------- splits


def split_indices(num_samples: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/val split; the same on every machine for the same (num_samples, seed)."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5911])).permutation(num_samples)
    num_val = min(max(1, round(num_samples * val_fraction)), num_samples - 1)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def _split(
    name: str,
    raw: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    cfg: DataConfig,
    tabular: bool,
    divisor: float | None = None,
) -> Dataset:
    """Split raw samples seeded; images divided into [0, 1] (`divisor`), tabular columns standardised
    with the training split's statistics. The steps are kept as the dataset's preprocessing."""
    train, val = split_indices(len(y), cfg.val_fraction, cfg.seed)
    preprocessing = Preprocessing(divisor=divisor)
    x_train, x_val = preprocessing.apply(raw[train]), preprocessing.apply(raw[val])
    if tabular:
        x_train, x_val, fitted = standardized(x_train, x_val)
        preprocessing = Preprocessing(divisor, fitted.mean, fitted.std)
    return Dataset(name, x_train, y[train], x_val, y[val], num_classes, preprocessing)


def raw_split(cfg: DataConfig, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """A generated or built-in dataset's `split` before preprocessing: what new raw samples look like
    (intrusion records, digits' 0-16 pixels). File datasets: read the file, then split_indices."""
    if cfg.name == "intrusion":
        raw, y = make_intrusion(cfg.num_samples, cfg.seed)
    elif cfg.name == "digits":
        raw, y = _digits_raw()
    elif cfg.name == "synthetic_images":
        raw, y = make_synthetic_images(cfg.num_samples, cfg.num_classes, cfg.channels, cfg.image_size, cfg.seed)
    else:
        raise DataError(f"raw_split reads generated and built-in datasets; read {cfg.name} data from {cfg.path}")
    train, val = split_indices(len(y), cfg.val_fraction, cfg.seed)
    rows = train if split == "train" else val
    return raw[rows], y[rows]


# ---------------------------------------------------------------------------- generated

INTRUSION_FEATURES = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root "
    "num_file_creations num_shells num_access_files num_outbound_cmds is_host_login "
    "is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate srv_rerror_rate "
    "same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate "
    "dst_host_srv_diff_host_rate dst_host_serror_rate dst_host_srv_serror_rate "
    "dst_host_rerror_rate dst_host_srv_rerror_rate"
).split()


def make_intrusion(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic connection records shaped like NSL-KDD: 41 numeric features, ~6% attacks.

    Three attack families (flood, scan, login abuse) each shift a different handful of
    features, partly through interactions, so a linear model is not enough; the other
    features are noise, heavy-tailed byte counts, or constant, as in the real data.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5]))
    n = num_samples
    col = {name: i for i, name in enumerate(INTRUSION_FEATURES)}
    x = np.zeros((n, len(INTRUSION_FEATURES)))
    family = rng.choice(4, size=n, p=[0.94, 0.032, 0.018, 0.010])  # normal, flood, scan, login

    def put(name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        if rows is None:
            x[:, col[name]] = values
        else:
            x[rows, col[name]] = values[rows] if np.ndim(values) else values

    put("duration", rng.exponential(1.0, n) * (rng.random(n) < 0.1) * 300)
    put("protocol_type", rng.choice(3, n, p=[0.8, 0.15, 0.05]))
    put("service", rng.integers(0, 70, n))
    put("flag", rng.choice(11, n, p=[0.7] + [0.03] * 10))
    put("src_bytes", rng.lognormal(6, 2, n))
    put("dst_bytes", rng.lognormal(7, 2.5, n) * (rng.random(n) < 0.6))
    put("logged_in", rng.random(n) < 0.45)
    put("hot", rng.poisson(0.2, n))
    put("count", rng.poisson(30, n) + rng.exponential(40, n))
    put("srv_count", rng.poisson(20, n) + rng.exponential(20, n))
    for name in (
        "serror_rate",
        "srv_serror_rate",
        "rerror_rate",
        "srv_rerror_rate",
        "diff_srv_rate",
        "srv_diff_host_rate",
        "dst_host_diff_srv_rate",
        "dst_host_srv_diff_host_rate",
        "dst_host_serror_rate",
        "dst_host_srv_serror_rate",
        "dst_host_rerror_rate",
        "dst_host_srv_rerror_rate",
        "dst_host_same_src_port_rate",
    ):
        put(name, rng.beta(0.6, 6.0, n))
    put("same_srv_rate", rng.beta(6.0, 1.2, n))
    put("dst_host_same_srv_rate", rng.beta(3.0, 1.5, n))
    put("dst_host_count", np.minimum(255, rng.gamma(4.0, 40.0, n)))
    put("dst_host_srv_count", np.minimum(255, rng.gamma(2.0, 50.0, n)))
    for name in ("land", "wrong_fragment", "urgent", "root_shell", "su_attempted", "num_shells", "is_host_login"):
        put(name, rng.random(n) < 0.002)
    for name in ("num_compromised", "num_root", "num_file_creations", "num_access_files"):
        put(name, rng.poisson(0.05, n))
    put("num_failed_logins", rng.poisson(0.01, n))
    put("is_guest_login", rng.random(n) < 0.01)
    # num_outbound_cmds stays zero, as in NSL-KDD.

    flood = np.flatnonzero(family == 1)
    scan = np.flatnonzero(family == 2)
    login = np.flatnonzero(family == 3)
    # Flood: many connections with SYN errors; half of the floods hide the error rate and
    # show only as high count with tiny payloads (an interaction a linear model misses).
    loud = flood[rng.random(len(flood)) < 0.5]
    quiet = np.setdiff1d(flood, loud)
    x[flood, col["count"]] += rng.normal(160, 60, len(flood))
    x[loud, col["serror_rate"]] = rng.beta(5, 1.5, len(loud))
    x[loud, col["dst_host_serror_rate"]] = rng.beta(4, 2, len(loud))
    x[quiet, col["src_bytes"]] = rng.lognormal(2.5, 1.0, len(quiet))
    x[flood, col["same_srv_rate"]] = rng.beta(1.5, 3, len(flood))
    # Scan: many services and hosts, rejected connections.
    x[scan, col["diff_srv_rate"]] = rng.beta(3, 2, len(scan))
    x[scan, col["dst_host_diff_srv_rate"]] = rng.beta(2.5, 2.5, len(scan))
    x[scan, col["rerror_rate"]] = rng.beta(2, 3, len(scan))
    x[scan, col["dst_host_srv_count"]] = rng.gamma(1.0, 8.0, len(scan))
    # Login abuse: failed logins, guest sessions, long durations, hot indicators.
    x[login, col["num_failed_logins"]] = rng.poisson(1.2, len(login))
    x[login, col["hot"]] += rng.poisson(2.0, len(login))
    x[login, col["is_guest_login"]] = rng.random(len(login)) < 0.4
    x[login, col["duration"]] += rng.exponential(400, len(login))

    x[:, col["src_bytes"]] = np.log1p(x[:, col["src_bytes"]])
    x[:, col["dst_bytes"]] = np.log1p(x[:, col["dst_bytes"]])
    y = (family > 0).astype(np.int64)
    return x, y


def make_synthetic_images(
    num_samples: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded NCHW images: each class is a smooth random pattern, drawn shifted, faded and noisy."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6E]))
    grid = np.linspace(0.0, 2 * np.pi, size, endpoint=False)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    prototypes = np.zeros((num_classes, channels, size, size))
    for k in range(num_classes):
        for c in range(channels):
            for _ in range(3):
                fy, fx = rng.integers(1, 4, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                prototypes[k, c] += rng.normal() * np.sin(fy * yy + fx * xx + phase)
    y = rng.integers(0, num_classes, num_samples)
    shifts = rng.integers(-size // 4, size // 4 + 1, size=(num_samples, 2))
    contrast = rng.uniform(0.3, 1.0, num_samples)
    x = np.empty((num_samples, channels, size, size))
    for i in range(num_samples):
        x[i] = contrast[i] * np.roll(prototypes[y[i]], tuple(shifts[i]), axis=(1, 2))
    x += rng.normal(0.0, 2.0, x.shape)
    return x, y.astype(np.int64)


def _intrusion(cfg: DataConfig) -> Dataset:
    x, y = make_intrusion(cfg.num_samples, cfg.seed)
    return _split("intrusion", x, y, 2, cfg, tabular=True)


def _synthetic_images(cfg: DataConfig) -> Dataset:
    x, y = make_synthetic_images(cfg.num_samples, cfg.num_classes, cfg.channels, cfg.image_size, cfg.seed)
    return _split("synthetic_images", x, y, cfg.num_classes, cfg, tabular=False)


def _digits(cfg: DataConfig) -> Dataset:

    raw, y = _digits_raw()
    return _split("digits", raw, y, 10, cfg, tabular=False, divisor=16.0)


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as shipped (inside the package: no download): (N, 1, 8, 8) pixel counts 0-16.
    Read from its file as load_digits reads it, without importing sklearn and scipy (1.1 s of a digits
    run's start on a 2-core CPU, against 25 ms; measured); load_digits where the file has moved."""
    table = shipped_digits_table()
    if table is not None:
        return table[:, :-1].reshape(-1, 1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 1, 8, 8).astype(np.float64), bunch.target.astype(np.int64)


def shipped_digits_table() -> np.ndarray | None:
    """The rows of digits.csv.gz (64 pixel columns, then the label); None where it is missing or holds
    something else (a later scikit-learn may change its format: load_digits then reads it)."""
    shipped = digits_file()
    if shipped is None:
        return None
    try:
        with gzip.open(shipped, "rt", encoding="utf-8") as text, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt's "input contained no data"
            table = np.loadtxt(text, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error):  # missing, not gzip, another format, damaged
        return None
    return table if table.shape[1:] == (65,) and len(table) > 0 else None


def digits_file() -> Path | None:
    """sklearn/datasets/data/digits.csv.gz of the installed scikit-learn, found without importing it."""
    try:
        found = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):  # a broken install, or a sklearn module without a spec
        return None
    locations = [] if found is None else list(found.submodule_search_locations or [])
    shipped = [Path(location) / "datasets" / "data" / "digits.csv.gz" for location in locations]
    return next((path for path in shipped if path.is_file()), None)


# ---------------------------------------------------------------------------- files


# Where each file dataset comes from: what a missing path's message tells the user to fetch.
SOURCES = {
    "idx": "a folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]: Fashion-MNIST's from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion), MNIST's, or what torchvision.datasets "
    "downloads into <root>/<Name>/raw",
    "cifar10": "the cifar-10-batches-py folder, unpacked from cifar-10-python.tar.gz "
    "(https://www.cs.toronto.edu/~kriz/cifar.html)",
    "csv": "a CSV file with a header row, numeric columns and the label column",
    "npz": "an .npz archive (numpy.savez) holding x_train, y_train, x_val, y_val",
}


def _require(path: Path, what: str, dataset: str = "") -> Path:
    if not path.exists():
        where = f"{path.resolve()}" if not path.is_absolute() else str(path)
        source = f"; the {dataset} dataset needs {SOURCES[dataset]}" if dataset in SOURCES else ""
        relative = " (a relative data.path is read from the current directory)" if not path.is_absolute() else ""
        raise DataError(f"{what} not found: {where}{relative}{source}")
    return path


def _open_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        return handle.read()


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST / Fashion-MNIST format), gzipped or not."""
    raw = _open_maybe_gzip(_require(path, "IDX file"))
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header promises shape {dims} ({expected} bytes) but holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"{stem}[.gz] not found in {directory}")


def _idx(cfg: DataConfig) -> Dataset:
    assert cfg.path is not None  # the config rules require data.path for this dataset
    root = _require(Path(cfg.path), "data.path", "idx")
    if root.is_dir():
        images_path, labels_path = _find(root, "train-images-idx3-ubyte"), _find(root, "train-labels-idx1-ubyte")
    else:
        images_path = root
        labels_path = root.with_name(root.name.replace("images-idx3", "labels-idx1"))
        if labels_path == images_path:
            raise DataError(
                f"cannot tell the labels file for {root}: name it *-images-idx3-ubyte[.gz] or pass the directory"
            )
        _require(labels_path, "IDX labels file")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected images of shape (N, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    y = labels.astype(np.int64)
    return _split("idx", images[:, None].astype(np.float64), y, int(y.max()) + 1, cfg, tabular=False, divisor=255.0)


class CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 python batch holds (dicts, lists, bytes, ints, NumPy
    arrays), so a crafted file in the data folder cannot run code: any other global is refused."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _cifar10(cfg: DataConfig) -> Dataset:
    assert cfg.path is not None  # the config rules require data.path for this dataset
    root = _require(Path(cfg.path), "data.path", "cifar10")
    batches = sorted(root.glob("data_batch_*")) if root.is_dir() else [root]
    if not batches:
        raise DataError(f"no CIFAR-10 python batches (data_batch_*) in {root}")
    xs, ys = [], []
    for path in batches:
        try:
            with open(path, "rb") as handle:
                entry = CifarUnpickler(handle, encoding="bytes").load()
            data, labels = np.asarray(entry[b"data"]), np.asarray(entry[b"labels"])
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({err})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    y = np.concatenate(ys).astype(np.int64)
    return _split("cifar10", np.concatenate(xs).astype(np.float64), y, 10, cfg, tabular=False, divisor=255.0)


def _csv(cfg: DataConfig) -> Dataset:
    assert cfg.path is not None  # the config rules require data.path for this dataset
    path = _require(Path(cfg.path), "CSV file", "csv")
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    header = [name.strip() for name in header]
    if cfg.label_column not in header:
        raise DataError(f"{path}: label column {cfg.label_column!r} not found; columns: {', '.join(header)}")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as err:
        raise DataError(f"{path}: every column must be numeric ({err})") from None
    if table.shape[1] != len(header):
        raise DataError(f"{path}: header has {len(header)} columns but rows have {table.shape[1]}")
    label_index = header.index(cfg.label_column)
    labels = table[:, label_index]
    x = np.delete(table, label_index, axis=1)
    y = _integer_labels(labels, f"{path} column {cfg.label_column!r}")
    _check_finite(x, f"{path}")
    return _split("csv", x, y, int(y.max()) + 1, cfg, tabular=True)


def _npz(cfg: DataConfig) -> Dataset:
    assert cfg.path is not None  # the config rules require data.path for this dataset
    path = _require(Path(cfg.path), "npz file", "npz")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataError(f"{path} is not an .npz archive; data.name npz needs {SOURCES['npz']}")
    loaded = np.load(path)  # allow_pickle=False: an object array is refused, never unpickled
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds one array, not an .npz archive of x_train, y_train, x_val, y_val")
    with loaded as archive:
        missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in archive]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}; it must hold x_train, y_train, x_val, y_val")
        arrays = {k: archive[k] for k in ("x_train", "y_train", "x_val", "y_val")}
    xs = {}
    for split in ("train", "val"):
        x = arrays[f"x_{split}"].astype(np.float64)
        if x.ndim == 3:  # (N, H, W) grayscale images
            x = x[:, None]
        if x.ndim not in (2, 4):
            raise DataError(f"{path}: x_{split} must be (N, F), (N, H, W) or (N, C, H, W), got {x.shape}")
        xs[split] = x
    y_train = _integer_labels(arrays["y_train"], f"{path} y_train")
    y_val = _integer_labels(arrays["y_val"], f"{path} y_val")
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    return Dataset("npz", xs["train"], y_train, xs["val"], y_val, num_classes)


def _arrays(cfg: DataConfig) -> Dataset:
    """Arrays as given, any sample shape: an .npz file (data.path), or those passed to fit(data=...)."""
    if cfg.path is None:
        raise DataError(
            "data.name arrays holds the arrays passed to fit(data=...); pass them again, or save them with "
            "numpy.savez and set data.path"
        )
    path = _require(Path(cfg.path), "npz file", "npz")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path} is not an .npz archive; data.name arrays needs {SOURCES['npz']}")
    with np.load(path) as archive:
        return arrays_dataset({key: archive[key] for key in archive.files}, str(path))


def arrays_dataset(arrays: Any, where: str = "data") -> Dataset:
    """A dataset from a dict of arrays x_train, y_train, x_val, y_val (any sample shape; float features
    or integer ids; integer class labels), as fit(data=...) takes them."""
    if not isinstance(arrays, dict):
        raise DataError(f"{where} must be a dict of arrays x_train, y_train, x_val, y_val or an .npz path")
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in arrays]
    if missing:
        raise DataError(f"{where} lacks {', '.join(missing)}; it must hold x_train, y_train, x_val, y_val")
    xs = {}
    for split in ("train", "val"):
        x = np.asarray(arrays[f"x_{split}"])
        xs[split] = x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float64)
    y_train = _integer_labels(np.asarray(arrays["y_train"]), f"{where} y_train")
    y_val = _integer_labels(np.asarray(arrays["y_val"]), f"{where} y_val")
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    dataset = Dataset("arrays", xs["train"], y_train, xs["val"], y_val, num_classes)
    check_dataset(dataset)
    return dataset


CORPUS = Path(__file__).resolve().parent / "corpus" / "parity.txt"


def _text(cfg: DataConfig) -> Dataset:
    """Characters as token ids (the sorted set of the text's characters), split in two contiguous parts
    (the last val_fraction for validation), cut into samples of block_size ids whose labels are the
    next id at every position (nanoGPT's character-level data). data.path: a UTF-8 file; null: a
    short text shipped with the package (loopspec/corpus/parity.txt)."""
    path = CORPUS if cfg.path is None else _require(Path(cfg.path), "text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    vocab = "".join(sorted(set(text)))
    ids = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.searchsorted(np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32), ids).astype(np.int64)
    split = int(len(ids) * (1 - cfg.val_fraction))
    stride = cfg.stride or cfg.block_size
    parts = []
    for part in (ids[:split], ids[split:]):
        starts = np.arange(0, len(part) - cfg.block_size, stride)
        if len(starts) == 0:
            raise DataError(
                f"{path}: {len(part)} characters in a split, fewer than data.block_size {cfg.block_size} + 1; "
                "lower data.block_size or data.val_fraction, or use a longer text"
            )
        windows = np.stack([part[start : start + cfg.block_size + 1] for start in starts])
        parts.append((windows[:, :-1], windows[:, 1:]))
    (x_train, y_train), (x_val, y_val) = parts
    return Dataset("text", x_train, y_train, x_val, y_val, len(vocab), Preprocessing(vocab=vocab))


def _integer_labels(labels: np.ndarray, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise DataError(f"{where}: labels must be (N,) class ids or (N, T) token ids, got shape {labels.shape}")
    _check_finite(labels.astype(np.float64), where)
    if not np.all(labels == np.round(labels)) or labels.min() < 0:
        raise DataError(f"{where}: labels must be non-negative integer class ids")
    return labels.astype(np.int64)


def _check_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        index = np.argwhere(bad)[0]
        raise DataError(f"{where}: {int(bad.sum())} NaN/inf values, first at index {tuple(int(i) for i in index)}")


def check_dataset(dataset: Dataset) -> None:
    """Shape, label and finiteness checks shared by every loader. Samples may have any shape; float
    features must be finite, integer inputs (token ids) non-negative."""
    for split in ("train", "val"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        where = f"dataset {dataset.name} ({split} split)"
        if len(x) == 0:
            raise DataError(f"{where} is empty")
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} samples but {len(y)} labels")
        if x.ndim < 2:
            raise DataError(f"{where}: inputs must be (N, ...) with one sample per row, got {x.shape}")
        if np.issubdtype(x.dtype, np.integer):
            if x.min(initial=0) < 0:
                raise DataError(f"{where}: integer inputs (token ids) must be non-negative, got {x.min()}")
        elif not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{where}: inputs must be floats or integer ids, got {x.dtype}")
        else:
            _check_finite(x, where)
        if y.min() < 0 or y.max() >= dataset.num_classes:
            raise DataError(f"{where}: labels must lie in [0, {dataset.num_classes}), got [{y.min()}, {y.max()}]")
    if dataset.x_train.shape[1:] != dataset.x_val.shape[1:]:
        raise DataError(
            f"dataset {dataset.name}: train samples are {dataset.x_train.shape[1:]} "
            f"but val samples are {dataset.x_val.shape[1:]}"
        )
    if dataset.num_classes < 2:
        raise DataError(f"dataset {dataset.name} has a single class; classification needs at least 2")
