"""The backends as loopspec reaches them: imported on first use, so loopspec needs neither framework."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from loopspec.errors import UserError

BackendName = Literal["torch", "jax"]
BACKEND_PACKAGES = {"torch": "torchloop", "jax": "flaxloop"}
FRAMEWORK_MODULES = ("torch", "jax", "jaxlib", "flax", "optax")
# pyproject's dependencies by their import names (pyyaml: yaml, scikit-learn: sklearn; tests/test_first_hour.py)
CORE_MODULES = ("numpy", "safetensors", "yaml", "tqdm", "matplotlib", "sklearn", "scipy") + (
    ("tomli",) if sys.version_info < (3, 11) else ()
)


def backend_module(backend: str, module: str) -> Any:
    """`torchloop.<module>` or `flaxloop.<module>`, imported on first use so loopspec needs neither."""
    if backend not in BACKEND_PACKAGES:
        raise UserError(f"unknown backend {backend!r}; use torch or jax")
    package = BACKEND_PACKAGES[backend]
    try:
        return importlib.import_module(f"{package}.{module}")
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in FRAMEWORK_MODULES:
            raise
        extra = "torch" if backend == "torch" else "jax"
        raise UserError(
            f"the {backend} backend needs {err.name}, which is not installed; pip install 'jax-torch-parity[{extra}]'"
        ) from None


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A package's module __getattr__ and __all__ exporting `name` from `package.<module>` on first
    use, so `python -m package.module` does not import that module twice."""

    def attribute(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return attribute, list(exports)


def refuse_a_command_without(modules: Sequence[str], extra: str = "") -> None:
    """`python -m <package>.<module>` started by an interpreter that lacks the project's packages (the
    system Python, not the .venv that `make run` set up): one line and exit 2, not an import traceback.
    Only for a command: while `python -m` imports the package, sys.argv[0] is "-m"; an import from
    code raises ImportError as usual."""
    if sys.argv[:1] != ["-m"]:
        return
    missing = missing_modules(modules)
    if missing:
        print(f"{sys.executable} lacks {', '.join(missing)}: {how_to_install(extra)}", file=sys.stderr)
        raise SystemExit(2)


def missing_modules(modules: Sequence[str]) -> list[str]:
    return [name for name in modules if not importable(name)]


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing; a module without a spec
        return False


def how_to_install(extra: str) -> str:
    """The environment make run set up, where this is a checkout that has one; else pip, for this
    interpreter, from the checkout or the package index."""
    root = Path(__file__).resolve().parents[1]
    venv = root / ".venv"
    if venv.is_dir() and Path(sys.prefix).resolve() != venv.resolve():
        return f"run it in the environment make run set up (source {venv}/bin/activate, or {venv}/bin/python)"
    suffix = f"[{extra}]" if extra else ""
    source = f"-e '{root}{suffix}'" if (root / "pyproject.toml").is_file() else f"'jax-torch-parity{suffix}'"
    return f"{sys.executable} -m pip install {source}"
