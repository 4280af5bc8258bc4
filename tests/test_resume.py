"""Runs that survive: killed with SIGKILL after round k and resumed, a run's tables are byte for byte those of an
uninterrupted run; SIGTERM leaves an "interrupted", readable run; a run directory is never overwritten silently; the
status is honest, failures during set-up included."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosim import engine
from cosim.cli import main
from cosim.rundir import default_run_dir, reported_status, safe_name
from cosim.scenario import ScenarioError, load_scenario
from cosim.trace import SCHEMA, read_manifest, read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
SETTINGS = ["simulation.rounds=5", "simulation.checkpoint_every_rounds=2"]
# run_scenario in a child process that SIGKILLs itself once round k has ended (after that round's checkpoint)
KILLED_AFTER = """
import os, signal, sys
from pathlib import Path
from cosim.engine import run_scenario
from cosim.scenario import load_scenario
scenario, out, k = load_scenario(sys.argv[1], sys.argv[4:]), Path(sys.argv[2]), int(sys.argv[3])
run_scenario(scenario, out, lambda s: s.round_index == k and os.kill(os.getpid(), signal.SIGKILL))
"""


def child_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def sets(overrides):
    return [item for override in overrides for item in ("--set", override)]


def assert_same_tables(run, reference):
    """Every table byte for byte."""
    for table in SCHEMA:
        assert (run / f"{table}.parquet").read_bytes() == (reference / f"{table}.parquet").read_bytes(), table


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    assert main(["run", str(TINY), "--out", str(out), "--quiet", *sets(SETTINGS)]) == 0
    return out


@pytest.mark.parametrize(("killed_after", "damage_newest", "resumed_from"), [(2, False, 2), (3, True, 2)])
def test_resume_after_sigkill_gives_the_uninterrupted_tables(uninterrupted, tmp_path, killed_after, damage_newest,
                                                             resumed_from):
    """Killed between checkpoints (round 2 is on disk past the checkpoint and is cut back), and right after one
    whose file is then damaged (the one before is used)."""
    out = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER, str(TINY), str(out), str(killed_after), *SETTINGS],
                           env=child_env(), capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    killed = read_run(out)  # the streams of a killed run are readable as they are
    assert killed["manifest"]["status"] == "killed" and len(killed["rounds"]) == killed_after + 1
    assert main(["status", str(out)]) == 1
    assert list(out.glob("sumo-errors-*.log"))  # SUMO's error log is left in the run, not in the temporary folder
    if damage_newest:
        newest = max((out / "checkpoints").iterdir())
        newest.write_bytes(newest.read_bytes()[:-64])
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["resumed_from_round"] == [resumed_from]
    assert len(manifest["damaged_checkpoints"]) == damage_newest
    assert_same_tables(out, uninterrupted)
    assert not list(out.glob("*.arrows")) and not (out / "checkpoints").exists()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0  # complete: nothing to resume, and no change
    assert_same_tables(out, uninterrupted)


def test_interrupted_before_any_checkpoint_starts_again(uninterrupted, tmp_path):
    scenario = load_scenario(TINY, SETTINGS)

    def stop(summary):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run_scenario(scenario, tmp_path, stop)
    assert read_manifest(tmp_path)["signal"] == "SIGINT" and len(read_run(tmp_path)["rounds"]) == 1
    assert main(["run", "--resume", str(tmp_path), "--quiet"]) == 0
    assert read_manifest(tmp_path)["resumed_from_round"] == [0]
    assert_same_tables(tmp_path, uninterrupted)


def test_sigterm_leaves_an_interrupted_readable_run(tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "cosim.cli", "run", str(TINY), "--out", str(out), "--quiet",
                              "--set", "simulation.rounds=1000"], env=child_env(), stderr=subprocess.PIPE, text=True)
    try:
        while child.poll() is None and not (
                (out / "manifest.json").is_file() and read_manifest(out).get("rounds_completed", 0) >= 1):
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=300)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM
    assert err.strip().count("\n") == 0 and "interrupted (SIGTERM)" in err and "--resume" in err
    run = read_run(out)
    assert run["manifest"]["status"] == "interrupted" and run["manifest"]["signal"] == "SIGTERM"
    assert 1 <= len(run["rounds"]) < 1000 and (out / "rounds.parquet").is_file()
    assert (out / "rounds.arrows").is_file()  # kept for --resume


def test_existing_run_directory_is_never_overwritten_silently(uninterrupted, tmp_path, capsys):
    assert main(["run", str(TINY), "--out", str(uninterrupted), "--quiet", *sets(SETTINGS)]) == 2
    assert "--resume" in capsys.readouterr().err and read_manifest(uninterrupted)["status"] == "complete"
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["run", str(TINY), "--out", str(tmp_path), "--overwrite"]) == 2
    assert "not a run directory" in capsys.readouterr().err and (tmp_path / "notes.txt").is_file()


def test_default_run_directory_names():
    base = load_scenario(TINY)
    other = load_scenario(TINY, ["simulation.rounds=5"])
    assert default_run_dir(base) != default_run_dir(other)
    assert default_run_dir(base).name.startswith("tiny-seed3-") and default_run_dir(base).parent == Path("runs")
    assert safe_name("../../x") == "x" and safe_name("a/b\\c\x00d e") == "a-b-c-d-e" and safe_name("..") == "run"


def test_status_of_a_run_whose_process_is_gone():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"status": "running", "hostname": os.uname().nodename}
    assert reported_status({**here, "pid": gone.pid}) == "killed"
    assert reported_status({**here, "pid": os.getpid()}) == "running"
    assert reported_status({**here, "pid": os.getpid(), "pid_start": -1}) == "killed"  # the pid was reused
    assert reported_status({**here, "hostname": "elsewhere", "pid": gone.pid}) == "running"
    assert reported_status({"status": "interrupted", "pid": gone.pid}) == "interrupted"


def test_failures_are_one_line_and_recorded(tmp_path, monkeypatch, capsys):
    """A failure in set-up (bad input found by the learning set-up: exit 2) and one at run time (exit 1): one line
    each, the traceback only under --debug, and the manifest says failed with the error."""
    too_many = ["learning.samples_per_client=1000000"]  # refused by the preflight, before any run directory
    assert main(["run", str(TINY), "--out", str(tmp_path / "setup"), "--quiet", *sets(too_many)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "samples_per_client" in err
    assert not (tmp_path / "setup").exists()

    def unloadable(*args, **kwargs):
        raise ScenarioError("scenario", ["learning.dataset: changed on disk since it was checked; run again"])

    monkeypatch.setattr(engine, "make_task", unloadable)  # a set-up failure after the run directory exists
    assert main(["run", str(TINY), "--out", str(tmp_path / "setup2"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    manifest = read_manifest(tmp_path / "setup2")
    assert manifest["status"] == "failed" and "learning.dataset" in manifest["error"]
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("scheduler exploded\nsecond line")

    monkeypatch.setattr(engine, "make_scheduler", broken)
    assert main(["run", str(TINY), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: RuntimeError: scheduler exploded second line (--debug shows the traceback)"
    assert read_manifest(tmp_path / "run")["error"] == "RuntimeError: scheduler exploded second line"
    with pytest.raises(RuntimeError, match="scheduler exploded"):
        main(["run", str(TINY), "--out", str(tmp_path / "debug"), "--quiet", "--debug"])
    assert read_manifest(tmp_path / "debug")["status"] == "failed"


def test_interrupted_split_run_resumes_exactly(tmp_path):
    """Split learning with Adam on the server and a Lyapunov scheduler: the checkpoint carries the global LoRA, every
    client's head and the optimiser state; the re-simulation rebuilds the scheduler's virtual queue."""
    overrides = ["learning.model=tiny-bert", "learning.eval_samples=64", "learning.eval_every=2",
                 "learning.server_optimizer=adam", "simulation.rounds=5", "simulation.checkpoint_every_rounds=2"]
    assert_resumes_exactly(load_scenario(ROOT / "scenarios" / "seed001-static.toml", overrides), tmp_path)


def assert_resumes_exactly(scenario, tmp_path):
    """A run interrupted after round 2 (checkpoints every 2 rounds) and resumed equals an uninterrupted one."""
    engine.run_scenario(scenario, tmp_path / "whole")

    def stop(summary):
        if summary.round_index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.run_scenario(scenario, tmp_path / "cut", stop)
    assert read_manifest(tmp_path / "cut")["status"] == "interrupted"
    assert len(read_run(tmp_path / "cut")["rounds"]) == 3  # rounds 0-2 flushed; round 2 lies past the checkpoint
    engine.run_scenario(scenario, tmp_path / "cut", resume=True)
    assert_same_tables(tmp_path / "cut", tmp_path / "whole")
