"""README.md and docs/ stay true: the two commands first, CI runs the test command, the config
reference generated from the schema, a short README whose links all resolve."""

from __future__ import annotations

import re
from pathlib import Path

README = Path("README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert README.index("```bash") < README.index("\n## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = Path(".ci/run").read_text()
    assert "make test" in ci.split("\n", 2)[-1]


def test_the_config_reference_is_generated_from_the_schema() -> None:
    from loopspec.config.reference import render

    committed = Path("docs/config.md").read_text()
    assert committed == render(), "docs/config.md is stale: python -m loopspec.config.reference > docs/config.md"
    for section in ("data", "model", "loss", "optimizer", "schedule", "train", "train.early_stopping"):
        assert f"\n## {section}\n" in committed


def test_the_readme_is_short_and_every_link_resolves() -> None:
    assert len(README.splitlines()) < 250
    for page in [Path("README.md"), *sorted(Path("docs").glob("*.md"))]:
        for target in re.findall(
            r"\]\(([\w./-]+\.(?:md|png|py|yaml|json|txt)|[\w.-]+/)(?:#[^)]*)?\)", page.read_text()
        ):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page}: link to {target} resolves to nothing"


def test_no_page_points_outside_the_repository() -> None:
    for page in [Path("README.md"), *Path("docs").glob("*.md")]:
        assert "../shared" not in page.read_text(), f"{page} points outside the repository"


def test_the_plain_pytorch_loading_example_runs(tmp_path: Path) -> None:
    """docs/checkpoints.md's example, on a run of the digits recipe made here."""
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
    page = Path("docs/checkpoints.md").read_text()
    section = page[page.index("## Loading a checkpoint into plain PyTorch") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1).replace("runs/digits", str(run))
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the README's own example
    assert namespace["position"]["step"] == 5
    assert set(namespace["optimizer"].state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_the_bring_your_own_models_script_runs(tmp_path: Path) -> None:
    """The README's script: at most 30 lines besides the two model classes; it prints AGREE."""
    import os
    import subprocess
    import sys

    section = README[README.index("## Bring your own models") : README.index("## What parity means")]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    outside_classes = re.sub(r"\nclass .*?(?=\n\n\n)", "", script, flags=re.S)
    assert len([line for line in outside_classes.splitlines() if line.strip()]) <= 30
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("AGREE") and "DISAGREE" not in done.stdout, done.stdout[-2000:]
