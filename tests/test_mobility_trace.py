"""Trace replay (FCD XML, CSV, parquet) against live SUMO, interpolation, recording and malformed files."""

import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import simpy

from cosim.scenario import parse_scenario
from cosim.world import World
from mobility import trace as trace_module
from mobility.config import place_rsus
from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, grid_scenario, sumo_home
from mobility.snapshot import Snapshot
from mobility.sumo import SumoMobility
from mobility.trace import TraceMobility, read_trace, record_trace

STEP_S = 0.5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SumoFiles:
    return grid_scenario(tmp_path_factory.mktemp("sumo-cache"), junctions=3, edge_length_m=150.0, lanes=1,
                         trip_period_s=1.0, end_s=200.0, seed=11)


@pytest.fixture(scope="module")
def live(files, tmp_path_factory) -> tuple[list[Snapshot], str, SumoFiles]:
    """Live snapshots every 1 s from 30 s to 60 s, the same drive recorded to parquet, and its SUMO files."""
    out = tmp_path_factory.mktemp("trace") / "drive.parquet"
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        rows, vehicles = record_trace(mobility, out, start_s=30.0, tick_s=1.0, duration_s=30.0)
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        snaps = [mobility.advance(30.0 + k) for k in range(31)]
    assert rows == sum(s.count for s in snaps) and vehicles == len(np.unique(np.concatenate([s.ids for s in snaps])))
    return snaps, str(out), files


def _assert_same(a: Snapshot, b: Snapshot, atol: float = 0.0) -> None:
    assert a.time_s == b.time_s
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.xy_m, b.xy_m, rtol=0, atol=atol)
    np.testing.assert_allclose(a.speed_mps, b.speed_mps, rtol=0, atol=atol)
    np.testing.assert_allclose(np.angle(np.exp(1j * (a.heading_rad - b.heading_rad))), 0.0, atol=1e-9 + atol)


def test_replay_reproduces_live_positions_exactly_at_sample_times(live):
    snaps, path, _ = live
    with TraceMobility(path) as replay:
        for snap in snaps:
            replayed = replay.advance(snap.time_s)
            _assert_same(replayed, snap)
            np.testing.assert_array_equal(replayed.xy_m, snap.xy_m)  # bit for bit, not just close


def test_replay_interpolates_between_samples_and_matches_a_finer_live_run(live, files):
    _, path, _ = live
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        fine = [mobility.advance(t) for t in (40.0, 40.5, 41.0)]
    with TraceMobility(path) as replay:
        mid = replay.advance(40.5)
    both, i, j = np.intersect1d(fine[0].ids, fine[2].ids, return_indices=True)
    np.testing.assert_array_equal(mid.ids, both)  # only vehicles sampled on both sides exist in between
    np.testing.assert_allclose(mid.xy_m, (fine[0].xy_m[i] + fine[2].xy_m[j]) / 2, rtol=0, atol=1e-9)
    # Against where SUMO really was at 40.5 s: straight-line interpolation is off only for vehicles that turn or
    # brake hard within the second.
    _, k, m = np.intersect1d(fine[1].ids, mid.ids, return_indices=True)
    error = np.hypot(*(fine[1].xy_m[k] - mid.xy_m[m]).T)
    assert np.median(error) < 0.5 and np.mean(error < 2.0) > 0.9


def test_synthetic_csv_lifetimes_interpolation_and_heading_from_motion(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,t,x,y,speed\na,0,0,0,10\na,2,20,0,10\na,4,20,20,10\nb,1,5,5,0\nb,3,5,5,4\n")
    replay = TraceMobility(path)
    assert replay.bounds() == (0.0, 0.0, 20.0, 20.0) and replay.duration == (0.0, 4.0)
    s = replay.advance(0.5)
    assert s.ids.tolist() == ["a"]  # b appears at its first sample only
    np.testing.assert_allclose(s.xy_m, [[5.0, 0.0]])
    np.testing.assert_allclose(s.heading_rad, [0.0])  # no angle column: the direction of travel, east
    s = replay.advance(3.0)
    assert s.ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(s.xy_m, [[20.0, 10.0], [5.0, 5.0]])
    np.testing.assert_allclose(s.speed_mps, [10.0, 4.0])
    np.testing.assert_allclose(s.heading_rad[0], np.pi / 2)  # on the northbound segment
    s = replay.advance(4.0)
    assert s.ids.tolist() == ["a"]  # b's last sample was at 3 s
    np.testing.assert_allclose(s.heading_rad, [np.pi / 2])
    assert replay.advance(4.5).count == 0
    with pytest.raises(MobilityError, match="back in time"):
        replay.advance(1.0)


def test_given_angles_turn_the_short_way_round(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": ["a", "a"], "t": [0.0, 1.0], "x": [0.0, 1.0], "y": [0.0, 0.0], "speed": [1.0, 1.0],
                  "angle": [350.0, 10.0]}).to_parquet(path)
    # SUMO 350° and 10° are 10° either side of north: halfway is north, not south.
    np.testing.assert_allclose(TraceMobility(path).advance(0.5).heading_rad, [np.pi / 2])


def test_sumo_fcd_output_replays_like_the_live_run(files, tmp_path):
    fcd = tmp_path / "fcd.xml"
    subprocess.run([str(sumo_home() / "bin" / "sumo"), "-n", str(files.net), "-r", str(files.routes[0]),
                    "--step-length", str(STEP_S), "--seed", "3", "--end", "45", "--fcd-output", str(fcd),
                    "--precision", "6", "--no-step-log", "--no-warnings"], check=True)
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        live = [mobility.advance(t) for t in (30.0, 40.0, 44.5)]
    replay = TraceMobility(fcd)
    for snap in live:
        # 6 decimals (SUMO's --precision), so equal to 1e-6.
        _assert_same(replay.advance(snap.time_s), snap, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("t.xml", '<fcd-export>\n<timestep time="0">\n<vehicle id="a" x="1" y="2" speed="3"/>\n<timestep',
         r"line 4: malformed XML"),
        ("t.xml", '<fcd-export>\n<timestep time="0">\n<vehicle id="a" x="1" y="two" speed="3"/>\n</timestep>\n'
                  "</fcd-export>", r"line 3: <vehicle> needs id, x, y and speed as numbers"),
        ("t.xml", '<fcd-export>\n<timestep time="0">\n<vehicle id="a" lon="1" lat="2" speed="3"/></timestep>'
                  "</fcd-export>", r"line 3: geo coordinates"),
        ("t.xml", '<fcd-export>\n<vehicle id="a" x="1" y="2" speed="3"/>\n</fcd-export>', r"line 2: <vehicle> outside"),
        ("t.csv", "id,t,x,y,speed\na,0,0,0,1\na,1,oops,0,1\n", r"line 3: column x must be a finite number"),
        ("t.csv", "id,t,x,y\na,0,0,0\n", r"missing column\(s\) speed"),
        ("t.csv", "id,t,x,y,speed\na,0,0,0,1\na,0,1,0,1\n", r"line 3: vehicle 'a' has two samples at t=0.0"),
        ("t.csv", "id,t,x,y,speed\n", r"has no vehicle samples"),
        ("t.csv", "id,t,x,y,speed\na,0,0,0,-1\n", r"line 2: speed must be >= 0"),
        ("t.json", "{}", r"unknown format"),
    ],
)
def test_malformed_trace_files_name_file_and_line(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MobilityError, match=rf"trace file {path}.*{match}"):
        TraceMobility(path)


def test_missing_trace_file_says_how_to_get_one(tmp_path):
    with pytest.raises(MobilityError, match="does not exist; record one with `cosim mobility record`"):
        read_trace(tmp_path / "nope.parquet")


class _Dying:
    """A mobility source whose simulator dies after a few ticks."""

    net_file = None

    def __init__(self) -> None:
        self.calls = 0

    def bounds(self) -> tuple[float, float, float, float]:
        return 0.0, 0.0, 100.0, 100.0

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        self.calls += 1
        if self.calls > 3:
            raise MobilityError("SUMO failed while advancing: it exited")
        return Snapshot(time_s, np.array(["v"]), np.array([[time_s, 0.0]]), np.ones(1), np.zeros(1))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_recording_keeps_the_samples_taken_before_the_source_fails(tmp_path, suffix):
    out = tmp_path / f"partial{suffix}"
    with pytest.raises(MobilityError, match="exited"):
        record_trace(_Dying(), out, start_s=10.0, tick_s=0.5, duration_s=60.0)
    frame = read_trace(out)
    assert frame["t"].tolist() == [10.0, 10.5, 11.0] and frame["x"].tolist() == [10.0, 10.5, 11.0]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    assert pd.api.types.is_float_dtype(frame["angle"])


class _Recorded:
    """The live drive as the World saw it: the same snapshots, bounds and net file."""

    def __init__(self, snaps: list[Snapshot], bounds, net_file) -> None:
        self._snaps, self._bounds, self.net_file = iter(snaps), bounds, net_file

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        return next(self._snaps)

    def bounds(self):
        return self._bounds

    def close(self) -> None:
        pass


def _world_run(scenario, mobility, ticks: int) -> tuple[list, list]:
    """Serving RSUs, gains and handover events of a World over `ticks` mobility ticks."""
    env = simpy.Environment(initial_time=scenario.simulation.start_s)
    events: list = []
    rsus = place_rsus(scenario.rsu, mobility.bounds(), mobility.net_file)
    world = World(env, scenario, mobility, rsus, events.extend)
    states = []
    for _ in range(ticks):
        world.refresh()
        states.append((world.ids.copy(), world.serving.copy(), world.gain.copy()))
        env.run(until=env.now + scenario.simulation.mobility_tick_s)
    return [rsus.xy_m.tolist(), *states], events


@pytest.mark.parametrize(("rsu", "name_net"), [
    ({"layout": "grid", "count": 4}, False), ({"layout": "grid", "spacing_m": 100.0}, False),
    ({"layout": "grid", "count": 4}, True), ({"layout": "junctions", "count": 3}, True), ({"layout": "file"}, False),
])
def test_live_and_replay_give_identical_worlds_for_every_rsu_layout(files, tmp_path, rsu, name_net):
    if rsu["layout"] == "file":
        (tmp_path / "rsus.csv").write_text("x,y\n40,40\n260,200\n")
        rsu = {**rsu, "file": str(tmp_path / "rsus.csv")}
    scenario = parse_scenario({"simulation": {"start_s": 30.0}, "rsu": {**rsu, "radius_m": 150.0},
                               "channel": {"fading_correlation": "jakes"}})
    out = tmp_path / "drive.parquet"
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        record_trace(mobility, out, start_s=30.0, tick_s=1.0, duration_s=20.0)
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        snaps = [mobility.advance(30.0 + k) for k in range(21)]
        live = _world_run(scenario, _Recorded(snaps, mobility.bounds(), mobility.net_file), 21)
    with TraceMobility(out, net_file=files.net if name_net else None) as replay:
        replayed = _world_run(scenario, replay, 21)
    assert len(live[1]) > 0  # there are handover events to compare
    assert replayed[1] == live[1]
    assert replayed[0][0] == live[0][0]  # the same RSU positions
    for (ids_a, serving_a, gain_a), (ids_b, serving_b, gain_b) in zip(live[0][1:], replayed[0][1:], strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(serving_a, serving_b)
        np.testing.assert_array_equal(gain_a, gain_b)


def test_recording_and_replay_stream_by_row_group(live, tmp_path, monkeypatch):
    snaps, _, files = live
    monkeypatch.setattr(trace_module, "_ROWS_PER_GROUP", 16)  # many row groups from a small drive
    out = tmp_path / "streamed.parquet"
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as mobility:
        record_trace(mobility, out, start_s=30.0, tick_s=1.0, duration_s=30.0)
        bounds = mobility.bounds()
    assert pq.ParquetFile(out).metadata.num_row_groups > 10
    replay = TraceMobility(out)
    assert replay.bounds() == bounds  # the recorded source's bounds, not the samples' box
    largest = 0
    for snap in snaps:
        _assert_same(replay.advance(snap.time_s), snap)
        largest = max(largest, len(replay._ahead))
    assert largest <= 2 * max(s.count for s in snaps) + 16  # read ahead by about a tick, not the whole file


def test_a_parquet_trace_out_of_time_order_is_sorted_once(tmp_path):
    path = tmp_path / "shuffled.parquet"
    pd.DataFrame({"id": ["a", "b", "a", "b"], "t": [2.0, 1.0, 0.0, 3.0], "x": [20.0, 5.0, 0.0, 5.0],
                  "y": [0.0, 5.0, 0.0, 9.0], "speed": [10.0, 0.0, 10.0, 4.0]}).to_parquet(path)
    replay = TraceMobility(path)
    assert replay.duration == (0.0, 3.0)
    np.testing.assert_allclose(replay.advance(1.0).xy_m, [[10.0, 0.0], [5.0, 5.0]])
    np.testing.assert_allclose(replay.advance(2.5).xy_m, [[5.0, 8.0]])  # a ended at 2 s
