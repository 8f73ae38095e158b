"""The package as a user installs it: the wheel holds the libraries, the recipes and the commands,
not the tests or benchmarks; installed into a fresh virtual environment, with the repository off
the path, each backend trains from another directory and parity-compare judges the two runs."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("loopspec", "torchloop", "flaxloop", "paritykit")
COMMANDS = (
    "torchloop-train",
    "flaxloop-train",
    "parity-compare",
    "parity-run",
    "parity-plots",
    "parity-locate",
    "parity-samples",
)


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    """From a copy of the sources, so the build leaves nothing behind in the repository."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp_path / "dist"), "."]
    run(command, source)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def fresh_environment(path: Path) -> Path:
    """A new virtual environment that sees this interpreter's installed torch and jax (a .pth line
    per site directory: installing them again would download gigabytes) but not the repository:
    the .pth files inside those directories, the editable install among them, are not processed."""
    venv.create(path, with_pip=False)  # this interpreter's pip installs into it (--python): 7 s less
    python = path / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path)
    site_dirs = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    site_dirs.append(sysconfig.get_paths()["purelib"])
    Path(purelib.stdout.strip(), "installed-frameworks.pth").write_text("\n".join(dict.fromkeys(site_dirs)) + "\n")
    return python


def test_the_wheel_installs_and_trains_from_anywhere(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == set(PACKAGES), top_level
    assert "loopspec/recipes/digits_cnn.yaml" in names and all(f"{p}/py.typed" in names for p in PACKAGES)
    assert "loopspec/dropout_kernel.c" in names  # the masks' C loop, built on first use
    assert not [name for name in names if Path(name).name.startswith("test_")]

    python = fresh_environment(tmp_path / "env")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-deps", "--force-reinstall", "--quiet", str(wheel)], tmp_path)
    bin_dir = python.parent
    assert all((bin_dir / command).exists() for command in COMMANDS)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import loopspec, torchloop, flaxloop; print(loopspec.__file__)"], elsewhere)
    assert where.stdout.strip().startswith(str(tmp_path / "env")), where.stdout  # the wheel, not the repository
    if shutil.which((shlex.split(os.environ.get("CC") or "cc") or ["cc"])[0]):  # the installed C source builds
        build = "import pathlib; from loopspec import dropout_kernel; print(dropout_kernel.c_fill(pathlib.Path('c')))"
        assert run([str(python), "-c", build], elsewhere).stdout.strip() != "None"

    settings = ["data.num_samples=600", "model.hidden=[16,8]", "model.dropout_mode=parity", "train.epochs=2"]
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    for command, out in (("torchloop-train", "a"), ("flaxloop-train", "b")):
        args = [str(bin_dir / command), "--config", "intrusion_mlp_focal", "--dtype", "float64", *overrides]
        run([*args, "--quiet", "--out", out], elsewhere)
    compared = run([str(bin_dir / "parity-compare"), "a", "b", "--rtol", "1e-10"], elsewhere)
    assert compared.stdout.rstrip().endswith("AGREE"), compared.stdout
