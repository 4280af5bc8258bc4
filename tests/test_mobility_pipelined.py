"""PipelinedSumo: SumoMobility in a worker process, stepping one tick ahead; same snapshots, same errors."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, grid_scenario
from mobility.pipelined import PipelinedSumo
from mobility.snapshot import Snapshot
from mobility.sumo import SumoMobility

STEP_S = 0.5
FIELDS = ("time_s", "ids", "xy_m", "speed_mps", "heading_rad")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SumoFiles:
    return grid_scenario(tmp_path_factory.mktemp("sumo-cache"), junctions=3, edge_length_m=150.0, lanes=1,
                         trip_period_s=1.0, end_s=200.0, seed=11)


def _same(a: Snapshot, b: Snapshot) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_snapshots_equal_in_process_sumo_with_and_without_looking_ahead(files):
    times = [STEP_S * k for k in range(0, 120)] + [61.0, 61.0, 75.25, 90.0]  # repeats, off-grid, skips
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as inline:
        expected = [inline.advance(t) for t in times]
        bounds = inline.bounds()
    with PipelinedSumo(files, step_length_s=STEP_S, seed=3) as ahead:
        assert ahead.bounds() == bounds and ahead.net_file == files.net
        # Look ahead to the next time asked for, except now and then (as a caller that does not know it).
        got = [ahead.advance(t, next_s=nxt if k % 7 else None)
               for k, (t, nxt) in enumerate(zip(times, [*times[1:], None], strict=True))]
    assert sum(s.count for s in expected) > 1000
    assert all(_same(a, b) for a, b in zip(expected, got, strict=True))


def test_a_look_ahead_shorter_than_the_next_request_steps_on(files):
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as inline:
        expected = inline.advance(40.0)
    with PipelinedSumo(files, step_length_s=STEP_S, seed=3) as ahead:
        ahead.advance(10.0, next_s=20.0)
        assert _same(ahead.advance(40.0), expected)


def test_stepping_without_reading_reaches_the_same_state(files):
    """step() is SUMO alone (benchmarks.mobility's baseline): stepping tick by tick, reading nothing, then
    advancing gives what advancing every tick gives."""
    with SumoMobility(files, step_length_s=STEP_S, seed=3) as inline:
        for k in range(1, 81):
            expected = inline.advance(STEP_S * k)
    with PipelinedSumo(files, step_length_s=STEP_S, seed=3) as ahead:
        for k in range(1, 80):
            ahead.step(STEP_S * k)
        assert _same(ahead.advance(40.0), expected) and expected.count > 0
        ahead.advance(40.5, next_s=41.0)
        with pytest.raises(MobilityError, match="not looking ahead"):
            ahead.step(45.0)
        with pytest.raises(MobilityError, match="goes back in time"):
            ahead.advance(41.0)
            ahead.step(40.0)


def test_asking_for_a_time_before_the_look_ahead_is_refused(files):
    with PipelinedSumo(files, step_length_s=STEP_S, seed=3) as ahead:
        ahead.advance(10.0, next_s=20.0)
        with pytest.raises(MobilityError, match=r"advance\(15\.0\) after looking ahead to 20\.0 s"):
            ahead.advance(15.0)
        assert ahead.advance(25.0).time_s == 25.0  # still usable


def test_sumo_errors_come_back_as_sumo_mobility_raises_them(files, tmp_path):
    bad_routes = tmp_path / "bad.rou.xml"
    bad_routes.write_text('<routes><vehicle id="x" depart="0" route="no_such_route"/></routes>')
    with pytest.raises(MobilityError, match="no_such_route"):
        PipelinedSumo(SumoFiles(net=files.net, routes=(bad_routes,)), step_length_s=STEP_S, seed=1)
    with pytest.raises(MobilityError, match="goes back in time"), \
            PipelinedSumo(files, step_length_s=STEP_S, seed=1) as ahead:
        ahead.advance(10.0)
        ahead.advance(5.0)


def test_a_worker_that_dies_is_named_and_close_leaves_no_process(files):
    ahead = PipelinedSumo(files, step_length_s=STEP_S, seed=1)
    ahead.advance(5.0, next_s=10.0)
    ahead._process.send_signal(signal.SIGKILL)
    with pytest.raises(MobilityError, match="SUMO worker process was killed by SIGKILL"):
        ahead.advance(10.0)
    ahead.close()
    ahead.close()
    assert ahead._process.poll() is not None
    with pytest.raises(MobilityError, match="closed"):
        ahead.advance(15.0)


def test_closing_mid_step_waits_for_the_worker(files):
    ahead = PipelinedSumo(files, step_length_s=STEP_S, seed=1)
    ahead.advance(1.0, next_s=150.0)  # the worker is stepping when close() comes
    ahead.close()
    assert ahead._process.returncode == 0


def test_a_script_without_a_main_guard_can_start_it(files, tmp_path):
    """The worker is not a multiprocessing child, which would re-run such a script (and fail) to start."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from mobility.netgen import SumoFiles
        from mobility.pipelined import PipelinedSumo
        files = SumoFiles(net=Path({str(files.net)!r}), routes=(Path({str(files.routes[0])!r}),))
        with PipelinedSumo(files, step_length_s=0.5, seed=1) as ahead:
            print(ahead.advance(30.0, next_s=31.0).count > 0)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"
