"""SumoMobility against a real (small) SUMO grid, with both backends."""

import subprocess

import numpy as np
import psutil
import pytest
from sumolib.miscutils import getFreeSocketPort

from mobility import sumo as sumo_module
from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, grid_scenario, sumo_home
from mobility.snapshot import Snapshot
from mobility.sumo import SumoMobility

STEP_S = 0.5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SumoFiles:
    return grid_scenario(
        tmp_path_factory.mktemp("sumo-cache"),
        junctions=3,
        edge_length_m=150.0,
        lanes=1,
        trip_period_s=1.0,
        end_s=200.0,
        seed=11,
    )


def _run(files: SumoFiles, seed: int, times, backend="libsumo") -> list[Snapshot]:
    with SumoMobility(files, step_length_s=STEP_S, seed=seed, backend=backend) as mobility:
        return [mobility.advance(t) for t in times]


def _identical(a: list[Snapshot], b: list[Snapshot]) -> bool:
    fields = ("time_s", "ids", "xy_m", "speed_mps", "heading_rad")
    return all(np.array_equal(getattr(sa, f), getattr(sb, f)) for sa, sb in zip(a, b, strict=True) for f in fields)


def test_snapshots_are_well_formed_inside_bounds_and_heading_follows_motion(files):
    with SumoMobility(files, step_length_s=STEP_S, seed=1) as mobility:
        xmin, ymin, xmax, ymax = mobility.bounds()
        # Lanes are offset from the 0..300 m edge centre lines, so the lane bounds are slightly wider.
        assert xmin < 0.0 < 300.0 < xmax and ymin < 0.0 < 300.0 < ymax and xmax - xmin < 310.0
        assert mobility.advance(0.0).count == 0
        snap = mobility.advance(40.0)
        nxt = mobility.advance(40.0 + STEP_S)
    assert snap.time_s == 40.0 and nxt.time_s == 40.0 + STEP_S
    n = snap.count
    assert n >= 10
    assert snap.ids.dtype.kind == "U" and np.array_equal(snap.ids, np.sort(snap.ids))
    assert len(np.unique(snap.ids)) == n
    assert snap.xy_m.shape == (n, 2) and snap.speed_mps.shape == (n,) and snap.heading_rad.shape == (n,)
    assert snap.xy_m.dtype == snap.speed_mps.dtype == snap.heading_rad.dtype == np.float64
    assert np.all((snap.xy_m >= [xmin, ymin]) & (snap.xy_m <= [xmax, ymax]))
    assert np.all(snap.speed_mps >= 0) and np.all(np.abs(snap.heading_rad) <= np.pi)
    # Heading (math convention) must point along each vehicle's displacement over the next step.
    _, i, j = np.intersect1d(snap.ids, nxt.ids, return_indices=True)
    move = nxt.xy_m[j] - snap.xy_m[i]
    moving = np.hypot(move[:, 0], move[:, 1]) > 1.0
    assert moving.sum() >= 5
    error = np.angle(np.exp(1j * (np.arctan2(move[moving, 1], move[moving, 0]) - nxt.heading_rad[j][moving])))
    assert np.mean(np.abs(error) < 0.05) > 0.9  # a few vehicles turn at junctions during the step
    # All four grid directions occur, so a sign or offset error in the angle conversion cannot hide.
    directions = np.round(nxt.heading_rad[j][moving] / (np.pi / 2)).astype(int) % 4
    assert set(directions.tolist()) == {0, 1, 2, 3}


def test_same_seed_is_identical_and_another_seed_differs(files):
    times = np.arange(1.0, 61.0, 1.0)
    first = _run(files, seed=3, times=times)
    assert _identical(first, _run(files, seed=3, times=times))  # also shows close() lets libsumo start again
    assert not _identical(first, _run(files, seed=4, times=times))


def test_traci_backend_matches_libsumo(files):
    times = [5.0, 20.0, 30.25, 45.0]  # 30.25 is not a step multiple: SUMO stops at the next step
    via_traci = _run(files, seed=2, times=times, backend="traci")
    assert via_traci[2].time_s == 30.5
    assert _identical(_run(files, seed=2, times=times), via_traci)


def test_only_one_libsumo_simulation_at_a_time_and_close_is_idempotent(files):
    first = SumoMobility(files, step_length_s=STEP_S, seed=1)
    try:
        with pytest.raises(MobilityError, match="one simulation per process"):
            SumoMobility(files, step_length_s=STEP_S, seed=1)
    finally:
        first.close()
    first.close()
    with pytest.raises(MobilityError, match="closed"):
        first.advance(10.0)
    with SumoMobility(files, step_length_s=STEP_S, seed=1) as second:
        assert second.advance(30.0).count > 0


def test_time_is_monotone(files):
    with SumoMobility(files, step_length_s=STEP_S, seed=1) as mobility:
        a = mobility.advance(20.0)
        b = mobility.advance(20.0)
        np.testing.assert_array_equal(a.xy_m, b.xy_m)
        with pytest.raises(MobilityError, match="back in time"):
            mobility.advance(19.0)


def test_missing_net_file_is_named(files, tmp_path):
    missing = tmp_path / "nope.net.xml"
    with pytest.raises(MobilityError, match=f"net file {missing} does not exist"):
        SumoMobility(SumoFiles(net=missing, routes=files.routes), step_length_s=STEP_S, seed=1)


@pytest.mark.parametrize("backend", ["libsumo", "traci"])
def test_sumo_errors_carry_sumo_message_and_leave_libsumo_usable(files, tmp_path, backend):
    bad_routes = tmp_path / "bad.rou.xml"
    bad_routes.write_text('<routes><vehicle id="x" depart="0" route="no_such_route"/></routes>')
    with pytest.raises(MobilityError, match="no_such_route"):
        SumoMobility(SumoFiles(net=files.net, routes=(bad_routes,)), step_length_s=STEP_S, seed=1, backend=backend)
    with SumoMobility(files, step_length_s=STEP_S, seed=1) as mobility:
        assert mobility.advance(30.0).count > 0


def test_sumo_process_dying_raises_mobility_error(files):
    me = psutil.Process()
    with SumoMobility(files, step_length_s=STEP_S, seed=1, backend="traci") as mobility:
        mobility.advance(5.0)
        (sumo_process,) = [p for p in me.children() if p.name() == "sumo"]
        sumo_process.kill()
        sumo_process.wait(timeout=10)
        with pytest.raises(MobilityError, match=r"advancing to 10\.0 s"):
            mobility.advance(10.0)


def test_malformed_net_file_names_file_and_line(files, tmp_path):
    broken = tmp_path / "broken.net.xml"
    broken.write_text("\n".join(files.net.read_text().splitlines()[:30]))  # truncated mid-file
    for backend in ("libsumo", "traci"):
        with pytest.raises(MobilityError, match=rf"net file {broken}, line 30: malformed XML"):
            SumoMobility(SumoFiles(net=broken, routes=files.routes), step_length_s=STEP_S, seed=1, backend=backend)


def test_gui_and_remote_need_traci_and_files_or_remote(monkeypatch):
    with pytest.raises(MobilityError, match="need backend='traci'"):
        SumoMobility(None, step_length_s=STEP_S, seed=1, remote=("localhost", 1))
    with pytest.raises(MobilityError, match="needs SUMO files"):
        SumoMobility(None, step_length_s=STEP_S, seed=1, backend="traci")
    monkeypatch.setattr(sumo_module, "_REMOTE_RETRIES", 0)  # nobody listens: fail at once
    with pytest.raises(MobilityError, match="cannot attach to SUMO at localhost:"):
        SumoMobility(None, step_length_s=STEP_S, seed=1, backend="traci", remote=("localhost", getFreeSocketPort()))


def test_attach_to_a_sumo_started_elsewhere_matches_own_run(files):
    times = [5.0, 20.0, 45.0]
    port = getFreeSocketPort()
    routes = ",".join(str(p) for p in files.routes)
    sumo = subprocess.Popen(
        [str(sumo_home() / "bin" / "sumo"), "-n", str(files.net), "-r", routes, "--step-length", str(STEP_S),
         "--seed", "2", "--no-step-log", "--no-warnings", "--remote-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with SumoMobility(None, step_length_s=STEP_S, seed=2, backend="traci", remote=("localhost", port)) as remote:
            assert remote.net_file is None
            attached = [remote.advance(t) for t in times]
        assert sumo.wait(timeout=10) == 0  # close() ended the remote simulation cleanly
    finally:
        if sumo.poll() is None:
            sumo.kill()
            sumo.wait()
    assert _identical(attached, _run(files, seed=2, times=times))


def test_teleporting_vehicles_leave_the_snapshot_and_come_back(files):
    # A 1 s jam tolerance makes SUMO teleport cars queued at junctions; while teleporting they are on no lane.
    last_seen: dict[str, int] = {}
    returns = 0
    with SumoMobility(files, step_length_s=STEP_S, seed=1, time_to_teleport_s=1.0) as mobility:
        xmin, ymin, xmax, ymax = mobility.bounds()
        for k, t in enumerate(np.arange(1.0, 120.0, STEP_S)):
            snap = mobility.advance(float(t))
            assert np.all((snap.xy_m >= [xmin, ymin]) & (snap.xy_m <= [xmax, ymax]))  # no -2^30 placeholders
            returns += sum(last_seen.get(v, k - 1) != k - 1 for v in snap.ids.tolist())
            last_seen.update(dict.fromkeys(snap.ids.tolist(), k))
    assert returns > 0
