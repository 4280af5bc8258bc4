"""The tiny scenario through the real CLI: SUMO, channel, energy and tiny-BERT LoRA training on one clock."""

from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from cosim.cli import main
from cosim.trace import SCHEMA, read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny scenario run twice with the same seed (and the same SUMO cache)."""
    out = tmp_path_factory.mktemp("runs")
    for name in ("a", "b"):
        assert main(["run", str(TINY), "--out", str(out / name), "--quiet"]) == 0
    return read_run(out / "a"), read_run(out / "b"), out / "a"


def test_trace_schema(tiny_runs):
    run, _, _ = tiny_runs
    for table, columns in SCHEMA.items():
        assert list(run[table].columns) == list(columns), table
    assert run["manifest"]["status"] == "complete"
    assert run["manifest"]["versions"]["torch"]
    assert len(run["rounds"]) == 4
    assert len(run["participants"]) > 0 and len(run["vehicles"]) > 0 and len(run["handovers"]) > 0


def test_same_seed_gives_identical_traces(tiny_runs):
    a, b, _ = tiny_runs
    for table in SCHEMA:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True)


def test_round_invariants(tiny_runs):
    run, _, _ = tiny_runs
    rounds, parts = run["rounds"], run["participants"]
    assert (rounds["arrivals"] + rounds["drops"] == rounds["participants"]).all()
    per_round = parts.groupby("round").size().reindex(rounds["round"], fill_value=0).to_numpy()
    np.testing.assert_array_equal(per_round, rounds["participants"].to_numpy())
    arrived = parts[parts["outcome"] == "arrived"]
    assert (arrived["upload_end_s"] >= arrived["upload_start_s"]).all()
    assert (arrived["upload_start_s"] >= arrived["compute_end_s"]).all()
    assert (arrived["compute_start_s"] >= arrived["download_end_s"]).all()
    for phase in ("download", "compute", "upload"):
        started = parts.dropna(subset=[f"{phase}_start_s"])
        assert (started[f"{phase}_end_s"] >= started[f"{phase}_start_s"]).all()
    assert (parts["upload_delay_s"] <= parts["upload_end_s"].fillna(0) - parts["upload_start_s"].fillna(0) + 1e-9).all()
    deadline = run["manifest"]["scenario"]["simulation"]["round_deadline_s"]
    assert (rounds["duration_s"] <= deadline + 1e-9).all()
    assert (parts["energy_j"] >= 0).all() and (parts["battery_j"] >= 0).all()
    assert (run["vehicles"]["battery_j"] >= 0).all()
    assert set(parts["outcome"]) <= {"arrived", "deadline", "handover", "coverage_lost", "left_network", "battery"}
    assert (rounds["end_s"].iloc[:-1].to_numpy() <= rounds["start_s"].iloc[1:].to_numpy()).all()


def test_one_serving_rsu_per_vehicle_at_a_time(tiny_runs):
    run, _, _ = tiny_runs
    vehicles = run["vehicles"]
    assert not vehicles.duplicated(subset=["time_s", "vehicle"]).any()
    # replaying the association events gives a consistent chain: each event starts where the last one ended
    for _, events in run["handovers"].sort_values("time_s", kind="stable").groupby("vehicle"):
        serving = -1
        for event in events.itertuples():
            assert event.from_rsu == serving
            serving = event.to_rsu


def test_notebook_runs_headless(tiny_runs, monkeypatch):
    _, _, run_dir = tiny_runs
    monkeypatch.setenv("COSIM_RUN", str(run_dir))
    notebook = nbformat.read(ROOT / "notebooks" / "run_overview.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in outputs)


def test_malformed_scenario_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("count = 2", "count = 0"))
    assert main(["run", str(bad), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rsu.count: must be >= 1, got 0" in err
    assert not (tmp_path / "never").exists()


STATIC = ROOT / "scenarios" / "seed001-static.toml"
MOBILITY = ROOT / "scenarios" / "seed001-mobility.toml"
TINY_SPLIT = ["learning.model=tiny-bert", "learning.eval_samples=64", "simulation.rounds=3"]


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory):
    """Seed 001's static cell in split mode with tiny-BERT, twice with the same seed, through the CLI."""
    out = tmp_path_factory.mktemp("split")
    for name in ("a", "b"):
        assert main(_with_overrides(["run", str(STATIC), "--out", str(out / name), "--quiet"], TINY_SPLIT)) == 0
    return read_run(out / "a"), read_run(out / "b")


def _with_overrides(argv, overrides):
    return [*argv, *[item for override in overrides for item in ("--set", override)]]


def test_split_bits_per_direction(split_runs):
    """b × ℓ × d float32 tensors: embeddings up, features down (tiny-BERT: d = 32); the gradient information up is
    b × ℓ × r per adapted layer (2 layers × query/key/value)."""
    run, _ = split_runs
    learning = run["manifest"]["scenario"]["learning"]
    tokens = learning["batch_size"] * learning["max_length"]
    tensor = tokens * 32 * 32
    gradient = tokens * learning["lora_rank"] * 2 * len(learning["lora_targets"]) * 32
    parts = run["participants"]
    assert (parts["upload_bits"] == tensor + gradient).all() and (parts["download_bits"] == tensor).all()
    assert (parts["rank"] == learning["lora_rank"]).all() and (parts["density"] == 1.0).all()
    assert run["manifest"]["payload_bits"] == 2 * tensor + gradient  # the paper's L_k, what the scheduler plans for
    rounds = run["rounds"]
    assert (rounds["upload_bytes"] == rounds["arrivals"] * (tensor + gradient) // 8).all()
    assert (rounds["download_bytes"] == rounds["participants"] * tensor // 8).all()


def test_split_round_order_and_invariants(split_runs):
    run, _ = split_runs
    rounds, parts = run["rounds"], run["participants"]
    assert len(rounds) == 3 and run["manifest"]["status"] == "complete"
    assert (rounds["arrivals"] + rounds["drops"] == rounds["participants"]).all() and rounds["participants"].min() > 0
    arrived = parts[parts["outcome"] == "arrived"]
    assert len(arrived) > 0
    # up embeddings -> down features -> head on the vehicle -> up gradients
    assert (arrived["upload_start_s"] < arrived["download_start_s"]).all()
    assert (arrived["download_start_s"] <= arrived["download_end_s"]).all()
    assert (arrived["download_end_s"] <= arrived["compute_start_s"]).all()
    assert (arrived["compute_end_s"] < arrived["upload_end_s"]).all()
    busy = arrived["download_s"] + arrived["compute_time_s"] + arrived["upload_delay_s"]
    np.testing.assert_allclose(busy, arrived["upload_end_s"] - arrived["upload_start_s"], rtol=1e-9)
    # Lyapunov splits the band so that every participant finishes together: one planned rate per round
    assert (parts.groupby("round")["rate_bps"].agg(lambda r: r.max() / r.min() - 1) < 1e-6).all()
    band = run["manifest"]["scenario"]["rsu"]["bandwidth_hz"]
    assert (parts.groupby("round")["bandwidth_hz"].sum() <= band * (1 + 1e-9)).all()
    assert not np.isnan(rounds["accuracy"].iloc[-1]) and (rounds["train_loss"] > 0).all()


def test_split_reciprocal_downlink_realises_the_papers_delay(split_runs):
    """With downlink = "reciprocal" and fading held through the round, every participant's time on the air is the
    paper's L_k/R_k at its planned rate, and Lyapunov's split makes it one delay per round."""
    run, _ = split_runs
    assert run["manifest"]["scenario"]["rsu"]["downlink"] == "reciprocal"
    parts = run["participants"]
    air_time = parts["download_s"] + parts["upload_delay_s"]
    np.testing.assert_allclose(air_time, run["manifest"]["payload_bits"] / parts["rate_bps"], rtol=1e-6)
    np.testing.assert_allclose(parts["scheduled_air_time_s"], air_time, rtol=1e-12)
    assert (air_time.groupby(parts["round"]).agg(lambda t: t.max() / t.min() - 1) < 1e-6).all()


def test_split_same_seed_gives_identical_traces(split_runs):
    a, b = split_runs
    for table in SCHEMA:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True)


def test_split_under_mobility_with_handovers(tmp_path):
    """The same learning and scheduler on the SUMO grid; a larger batch makes rounds last long enough to drive."""
    overrides = [*TINY_SPLIT, "learning.batch_size=64", "learning.max_length=128"]
    assert main(_with_overrides(["run", str(MOBILITY), "--out", str(tmp_path / "m"), "--quiet"], overrides)) == 0
    run = read_run(tmp_path / "m")
    parts, rounds = run["participants"], run["rounds"]
    assert len(rounds) == 3 and rounds["participants"].min() > 0
    assert parts["rsu"].nunique() > 1  # several RSUs schedule their own vehicles
    assert (parts["upload_bits"] == 64 * 128 * (32 + 8 * 2 * 3) * 32).all()  # embeddings + r·M gradient values
    assert (run["handovers"]["kind"] == "handover").any()
    for _, bands in parts.groupby(["round", "rsu"])["bandwidth_hz"]:
        assert bands.sum() <= 10e6 * (1 + 1e-9)
