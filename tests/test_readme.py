"""README.md stays true: the two commands first, CI runs the test command, every config key documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from loopspec.config import Config

README = Path("README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert README.index("```bash") < README.index("\n## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = Path(".ci/run").read_text()
    assert "make test" in ci.split("\n", 2)[-1]


def _keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for field in dataclasses.fields(cls):
        if (
            dataclasses.is_dataclass(field.type)
            or isinstance(field.default_factory, type)
            and dataclasses.is_dataclass(field.default_factory)
        ):
            keys += _keys(field.default_factory, f"{prefix}{field.name}.")
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def test_every_config_key_is_in_the_reference() -> None:
    reference = README[README.index("## Config reference") : README.index("## What parity means")]

    def documented(key: str) -> bool:
        parts = key.split(".")
        return any(f"`{'.'.join(parts[i:])}`" in reference for i in range(len(parts)))

    missing = [key for key in _keys(Config) if not documented(key)]
    assert not missing, f"undocumented config keys: {missing}"
    assert "`early_stopping.patience`" in reference


def test_the_plain_pytorch_loading_example_runs(tmp_path: Path) -> None:
    """The README's example, on a run of the digits recipe made here."""
    import subprocess
    import sys

    run = tmp_path / "digits"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchloop.train",
            "--config",
            "configs/digits_cnn.yaml",
            "--out",
            str(run),
            "--set",
            "train.epochs=1",
            "--set",
            "train.max_steps=5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    section = README[README.index("### Loading a checkpoint into plain PyTorch") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1).replace("runs/digits", str(run))
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the README's own example
    assert namespace["position"]["step"] == 5
    assert set(namespace["optimizer"].state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
