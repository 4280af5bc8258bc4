import numpy as np
import pytest

from cosim.scenario import parse_scenario
from mobility.config import open_mobility, place_rsus
from mobility.static import StaticDiskMobility


def test_devices_are_uniform_in_the_disk_and_never_move():
    mobility = StaticDiskMobility(20_000, 500.0, seed=1)
    first, later = mobility.advance(0.0), mobility.advance(100.0)
    np.testing.assert_array_equal(first.xy_m, later.xy_m)
    r2 = np.sum((first.xy_m - 500.0) ** 2, axis=1)
    assert r2.max() <= 500.0**2
    assert r2.mean() == pytest.approx(500.0**2 / 2, rel=0.02)  # uniform in area: E[r²] = R²/2
    assert np.all(first.speed_mps == 0) and list(first.ids) == sorted(first.ids)


def test_same_seed_same_positions():
    a = StaticDiskMobility(10, 100.0, seed=3).advance(0.0).xy_m
    b = StaticDiskMobility(10, 100.0, seed=3).advance(0.0).xy_m
    c = StaticDiskMobility(10, 100.0, seed=4).advance(0.0).xy_m
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scenario_builds_the_paper_cell(tmp_path):
    scenario = parse_scenario({"mobility": {"source": "static-disk", "disk": {"devices": 7, "radius_m": 300.0}},
                               "rsu": {"count": 1, "radius_m": 300.0}})
    with open_mobility(scenario.mobility, tmp_path, seed=0) as mobility:
        rsus = place_rsus(scenario.rsu, mobility.bounds(), mobility.net_file)
        assert mobility.advance(0.0).count == 7
    np.testing.assert_allclose(rsus.xy_m, [[300.0, 300.0]])  # the server sits at the centre
