"""Runs that would be silently empty are refused before they start, each with one line naming the field; a run that
ended with no participant says why."""

from pathlib import Path

import numpy as np
import pytest
import simpy

from cosim.cli import main
from cosim.scenario import parse_scenario
from cosim.trace import read_manifest
from cosim.world import World
from mobility.checks import no_participant_error
from mobility.config import MobilityConfig, RsuConfig, open_mobility, problems
from mobility.errors import EmptyRunError, MobilityError
from mobility.rsu import grid_layout
from mobility.snapshot import Snapshot

ROOT = Path(__file__).resolve().parents[1]
GRID = {"network": {"junctions": 3, "edge_length_m": 150.0}, "demand": {"trip_period_s": 2.0, "end_s": 300.0}}


def test_a_run_before_the_demand_begins_is_refused_by_the_cli(capsys, tmp_path):
    # The tiny scenario runs from 60 s to 68 s at most; with trips departing from 500 s it would see no vehicle.
    assert main(["run", str(ROOT / "tests/data/tiny.toml"), "--quiet", "--out", str(tmp_path / "run"),
                 "--set", "mobility.demand.begin_s=500",
                 "--set", "mobility.demand.end_s=900"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mobility.demand: no vehicle departs between SUMO's begin at 0 s and the run's end "
                          "at 68 s (demand departs 500-899 s)") and err.count("\n") == 1


def test_a_start_before_sumo_begins_is_a_problem(tmp_path):
    config = MobilityConfig(**GRID, begin_s=100.0)
    assert problems(config, window_s=(60.0, 90.0), cache_dir=tmp_path, seed=1)[0] == (
        "simulation.start_s = 60 s is before SUMO begins (mobility.begin_s = 100 s); set simulation.start_s >= 100")


def test_demand_of_other_classes_only_is_a_problem(tmp_path):
    config = MobilityConfig(**GRID, vehicle_classes=["bus"])
    assert problems(config, window_s=(60.0, 90.0), cache_dir=tmp_path, seed=1) == [
        "mobility.demand: no vehicle of mobility.vehicle_classes (bus) departs between SUMO's begin at 0 s and the "
        "run's end at 90 s (demand departs 0-298 s); set mobility.begin_s and simulation.start_s inside the demand"]


def test_rsus_off_the_network_or_covering_no_lane_are_refused(tmp_path):
    csv = tmp_path / "rsus.csv"
    csv.write_text("x,y\n-400,44.49\n150,150\n")  # one RSU in another coordinate system
    with pytest.raises(MobilityError, match=r"^rsu: 1 of 2 RSUs lie outside the network \(RSU 0 at x=-400, "
                                            r"y=44.49; network x -2\.\.302 m, y -2\.\.302 m\); .*not lon/lat"):
        open_mobility(MobilityConfig(**GRID), tmp_path, seed=1, window_s=(60.0, 90.0),
                      rsu=RsuConfig(layout="file", file=csv, radius_m=100.0))
    csv.write_text("x,y\n75,75\n")  # inside a block: its 10 m disc reaches no lane
    assert problems(MobilityConfig(**GRID), window_s=(60.0, 90.0), cache_dir=tmp_path, seed=1,
                    rsu=RsuConfig(layout="file", file=csv, radius_m=10.0)) == [
        "rsu: the RSUs cover 0% of the network's lane length; raise rsu.radius_m or move the RSUs (rsu.layout, "
        "rsu.file)"]


def test_a_trace_shorter_than_the_run_is_refused(tmp_path):
    trace = tmp_path / "short.csv"
    trace.write_text("id,t,x,y,speed\na,60,0,0,1\na,65,5,0,1\n")
    with pytest.raises(MobilityError, match=r"^mobility.trace: short.csv covers 60-65 s but the run needs 60-68 s"):
        open_mobility(MobilityConfig(source="trace", trace=trace), tmp_path, seed=1, window_s=(60.0, 68.0))
    assert problems(MobilityConfig(source="trace", trace=trace), window_s=(60.0, 65.0), cache_dir=tmp_path,
                    seed=1) == []


@pytest.mark.parametrize(
    ("seen", "served", "why"),
    [(0, 0, "no vehicle was in the network"), (12, 0, "12 vehicles drove but none was in an RSU's coverage"),
     (12, 5, "5 of 12 vehicles were covered but the scheduler picked none")],
)
def test_an_empty_run_says_which_stage_was_empty(seen, served, why):
    error = no_participant_error(vehicles_seen=seen, served_seen=served, window_s=(60.0, 68.0))
    assert isinstance(error, EmptyRunError) and isinstance(error, MobilityError)
    assert str(error).startswith(f"the run from 60 s to 68 s had no participant at all: {why}")
    assert "\n" not in str(error)


def test_a_run_with_no_participant_fails_with_the_reason(capsys, tmp_path):
    # One RSU whose 2 m disc touches a lane (so the pre-run checks pass) but that no car comes near during the run.
    rsus = tmp_path / "rsus.csv"
    rsus.write_text("x,y\n75,-1.6\n")
    out = tmp_path / "run"
    assert main(["run", str(ROOT / "tests/data/tiny.toml"), "--quiet", "--out", str(out), "--set", "rsu.layout=file",
                 "--set", f"rsu.file='{rsus}'", "--set", "rsu.radius_m=2.0"]) == 2
    message = ("the run from 60 s to 65 s had no participant at all: 56 vehicles drove but none was in an RSU's "
               "coverage; check the [rsu] layout and radius_m")
    assert capsys.readouterr().err == f"error: {message} (--debug shows the traceback)\n"
    manifest = read_manifest(out)
    assert (manifest["status"], manifest["error"]) == ("failed", message)


class _TwoCars:
    """One car near the RSU at x = 250 m, one 2 km away."""

    net_file = None

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        return Snapshot(time_s, np.array(["far", "near"]), np.array([[2000.0, 50.0], [240.0, 50.0]]), np.ones(2),
                        np.zeros(2))

    def bounds(self) -> tuple[float, float, float, float]:
        return 0.0, 0.0, 1000.0, 100.0

    def close(self) -> None:
        pass


def test_the_world_counts_vehicles_seen_and_served_for_the_empty_run_error():
    env = simpy.Environment()
    rsus = grid_layout((0.0, 0.0, 500.0, 100.0), rows=1, cols=1, radius_m=300.0, height_m=10.0, bandwidth_hz=1e7)
    world = World(env, parse_scenario({}), _TwoCars(), rsus, lambda events: None)
    world.refresh()
    world.refresh()
    assert (world.vehicles_seen, world.served_seen) == (2, 1)
