"""Every command in README.md is run, parsed from the README itself so the two cannot drift: `cosim` commands
through the real CLI, runs with tiny settings appended (the README's own `--set`s are applied and validated; the tiny
model, data and round count keep the run CI-sized); the set-up lines' pip extras and console script are checked
against pyproject.toml (installing a fresh environment is what the CI job itself does)."""

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from cosim.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# what makes a README run CI-sized: the tiny random model, few clients and samples, two rounds after a short warm-up
TINY_LEARNING = ["learning.model=tiny-bert", "learning.clients=8", "learning.samples_per_client=8",
                 "learning.max_length=24", "learning.batch_size=8", "learning.local_steps=1",
                 "learning.eval_samples=32", "simulation.rounds=2", "simulation.start_s=60"]


def commands() -> list[list[str]]:
    """Each command of the README's bash blocks (split at &&), and its inline `cosim ...` commands with a scenario
    placeholder."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                found.append(words[:cut])
                words = words[cut + 1:]
    for inline in re.findall(r"`(cosim [^`]*SCENARIO[^`]*)`", README):
        found.append(shlex.split(inline.replace("SCENARIO", "tests/data/tiny.toml")))
    return found


COSIM = [words for words in commands() if Path(words[0]).name == "cosim"]


def test_readme_has_its_commands():
    assert len([words for words in COSIM if words[1] == "run"]) >= 3
    assert any(words[1:3] == ["mobility", "record"] for words in COSIM)
    assert any(words[1] == "validate" for words in COSIM)


def test_setup_commands_match_the_project():
    for words in commands():
        if words[0] == "python3":
            assert words[1:4] == ["-m", "venv", ".venv"]
        elif words[0].endswith("pip"):
            target = words[words.index("-e") + 1]
            extras = re.findall(r"\[(.*)\]", target)
            assert target.split("[")[0] == "." and set(extras) <= set(PYPROJECT["project"]["optional-dependencies"])
        elif words[0].endswith("python"):
            assert words[1:] == ["-m", "pytest"] and PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"]
        elif words[0] == "(command":  # the test command installs the report test's headless browser if missing
            assert words[1:3] == ["-v", "chromium"] and "apt-get" in " ".join(words)
        elif words[0] == "apt-get":  # its second half: the install itself
            assert words[1] == "install" and "chromium" in words
        else:
            assert Path(words[0]).name == "cosim" and "cosim" in PYPROJECT["project"]["scripts"], words


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all the README's commands, run in the README's order, as a user pasting them would: a
    command may read what an earlier one wrote (`cosim status runs/demo` after `cosim run ... --out runs/demo`)."""
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("words", COSIM, ids=[" ".join(words[1:]) for words in COSIM])
def test_readme_cosim_command_runs(words, workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)  # `runs/...` lands in tmp; the README's relative inputs are the repository's
    argv = [str(ROOT / word) if (ROOT / word).is_file() else word for word in words[1:]]
    fresh_run = argv[0] == "run" and "--resume" not in argv
    if fresh_run:
        argv += [*(item for override in TINY_LEARNING for item in ("--set", override)), "--quiet", "--overwrite"]
    assert main(argv) == 0, capsys.readouterr().err
    if fresh_run:
        out = capsys.readouterr().out
        assert "final accuracy" in out and "traces: " in out
