"""RSU placement (grid, spacing, junctions, CSV), coverage holes, distances and dwell-time estimates."""

import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from mobility import rsu
from mobility.errors import MobilityError
from mobility.rsu import (
    Links,
    RsuLayout,
    dwell_time_s,
    file_layout,
    grid_layout,
    junction_degrees,
    junction_layout,
    lane_samples,
    net_bounds,
    network_uncovered_fraction,
    spaced_layout,
    uncovered_fraction,
)


def test_grid_layout_places_rsus_at_cell_centres_row_major():
    layout = grid_layout((0.0, 100.0, 300.0, 300.0), rows=2, cols=3, radius_m=250.0, height_m=10.0, bandwidth_hz=20e6)
    assert layout.count == 6
    np.testing.assert_allclose(layout.xy_m, [[50, 150], [150, 150], [250, 150], [50, 250], [150, 250], [250, 250]])
    np.testing.assert_array_equal(layout.radius_m, np.full(6, 250.0))
    np.testing.assert_array_equal(layout.height_m, np.full(6, 10.0))
    np.testing.assert_array_equal(layout.bandwidth_hz, np.full(6, 20e6))


def test_single_rsu_sits_in_the_middle():
    layout = grid_layout((-10.0, -20.0, 10.0, 20.0), rows=1, cols=1, radius_m=1.0, height_m=0.0, bandwidth_hz=1.0)
    np.testing.assert_allclose(layout.xy_m, [[0.0, 0.0]])


def test_distances_are_vehicle_by_rsu():
    layout = RsuLayout(
        xy_m=np.array([[0.0, 0.0], [10.0, 0.0]]),
        radius_m=np.array([5.0, 5.0]),
        height_m=np.array([10.0, 10.0]),
        bandwidth_hz=np.array([1e6, 1e6]),
    )
    d = layout.distances_m(np.array([[3.0, 4.0], [10.0, 0.0], [10.0, 10.0]]))
    assert d.shape == (3, 2)
    np.testing.assert_allclose(d, [[5.0, np.hypot(7, 4)], [10.0, 0.0], [np.hypot(10, 10), 10.0]])
    assert layout.distances_m(np.empty((0, 2))).shape == (0, 2)


@pytest.mark.parametrize("layout", [
    grid_layout((0.0, 0.0, 6000.0, 4000.0), rows=6, cols=9, radius_m=500.0, height_m=10.0, bandwidth_hz=1e7),
    RsuLayout(np.random.default_rng(1).uniform(0, 3000, (40, 2)), np.random.default_rng(2).uniform(20, 900, 40),
              np.full(40, 10.0), np.full(40, 1e7)),  # irregular sites, radii from 20 to 900 m
    RsuLayout(np.array([[0.0, 0.0], [1e5, 1e5]]), np.array([5.0, 5.0]), np.zeros(2), np.ones(2)),  # coarse cells
], ids=["grid", "irregular", "sparse"])
def test_links_are_exactly_the_pairs_in_coverage(layout):
    xy = np.random.default_rng(3).uniform(-1500, 7500, (20_000, 2))
    xy[:50] = layout.xy_m[np.arange(50) % layout.count]  # on a site
    xy[50:100] = layout.xy_m[np.arange(50) % layout.count] + np.column_stack(  # exactly on a disc's rim
        [layout.radius_m[np.arange(50) % layout.count], np.zeros(50)])
    distance = layout.distances_m(xy)
    row, rsu = np.nonzero(distance <= layout.radius_m)
    links = layout.links(xy)
    np.testing.assert_array_equal(links.row, row)
    np.testing.assert_array_equal(links.rsu, rsu)
    np.testing.assert_array_equal(links.distance_2d_m, distance[row, rsu])  # the same bits as distances_m


def test_links_find_and_follow_vehicles_from_one_instant_to_the_next():
    before = Links(np.array([0, 0, 1, 2]), np.array([1, 3, 0, 3]), np.zeros(4), 4)
    np.testing.assert_array_equal(before.find(np.array([0, 2, 1, 1]), np.array([3, 3, 1, -1])), [1, 3, -1, -1])
    # Vehicle rows now: 0 is new, 1 was row 0, 2 was row 2; row 1 left. Same RSU, same vehicle: carried.
    after = Links(np.array([0, 1, 1, 2]), np.array([1, 1, 2, 3]), np.zeros(4), 4)
    known, previous_row = np.array([False, True, True]), np.array([0, 0, 2])
    np.testing.assert_array_equal(after.carried_from(before, known, previous_row), [-1, 0, -1, 3])
    assert len(Links.every(np.zeros((3, 2)))) == 6
    np.testing.assert_array_equal(after.carried_from(Links.every(np.zeros((0, 4))), known, previous_row), [-1] * 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"xy_m": np.zeros((2, 3))}, "xy_m"),
        ({"radius_m": np.ones(3)}, "radius_m"),
        ({"radius_m": np.array([1.0, 0.0])}, "radius_m"),
        ({"height_m": np.array([1.0, -1.0])}, "height_m"),
        ({"bandwidth_hz": np.array([1.0, np.nan])}, "bandwidth_hz"),
    ],
)
def test_layout_rejects_malformed_columns(kwargs, match):
    fields = {"xy_m": np.zeros((2, 2)), "radius_m": np.ones(2), "height_m": np.ones(2), "bandwidth_hz": np.ones(2)}
    with pytest.raises(MobilityError, match=match):
        RsuLayout(**{**fields, **kwargs})


def test_grid_layout_rejects_bad_arguments():
    with pytest.raises(MobilityError, match="bounds"):
        grid_layout((0.0, 0.0, 0.0, 10.0), rows=1, cols=1, radius_m=1.0, height_m=1.0, bandwidth_hz=1.0)
    with pytest.raises(MobilityError, match="rows"):
        grid_layout((0.0, 0.0, 1.0, 1.0), rows=0, cols=1, radius_m=1.0, height_m=1.0, bandwidth_hz=1.0)
    with pytest.raises(MobilityError, match="distances_m"):
        grid_layout((0.0, 0.0, 1.0, 1.0), rows=1, cols=1, radius_m=1.0, height_m=1.0, bandwidth_hz=1.0).distances_m(
            np.zeros(2)
        )


BOLOGNA_NET = Path(__file__).resolve().parents[1] / "mobility/data/bologna-acosta/acosta_buslanes.net.xml.gz"
LAYOUT_ARGS = {"radius_m": 300.0, "height_m": 10.0, "bandwidth_hz": 1e6}


def test_spaced_layout_covers_the_bounds_with_cells_about_the_spacing():
    layout = spaced_layout((0.0, 0.0, 1000.0, 450.0), spacing_m=250.0, **LAYOUT_ARGS)
    assert layout.count == 4 * 2
    np.testing.assert_allclose(layout.xy_m[:4], [[125, 112.5], [375, 112.5], [625, 112.5], [875, 112.5]])
    assert spaced_layout((0.0, 0.0, 10.0, 10.0), spacing_m=500.0, **LAYOUT_ARGS).count == 1


def test_junction_layout_picks_the_busiest_junctions_of_a_real_network_apart():
    xy, degree = junction_degrees(BOLOGNA_NET)
    layout = junction_layout(BOLOGNA_NET, count=5, min_separation_m=0.0, **LAYOUT_ARGS)
    top = np.sort(degree)[::-1][:5]
    picked = [degree[np.flatnonzero((xy == p).all(axis=1))[0]] for p in layout.xy_m]
    assert picked == top.tolist()
    apart = junction_layout(BOLOGNA_NET, count=9, min_separation_m=300.0, **LAYOUT_ARGS)
    d = apart.distances_m(apart.xy_m)
    assert d[~np.eye(9, dtype=bool)].min() >= 300.0
    with pytest.raises(MobilityError, match=r"only .* junctions are at least 2000.0 m apart"):
        junction_layout(BOLOGNA_NET, count=3, min_separation_m=2000.0, **LAYOUT_ARGS)


def test_file_layout_reads_per_rsu_columns_with_defaults(tmp_path):
    path = tmp_path / "rsus.csv"
    path.write_text("x,y,radius_m,bandwidth_hz\n0,0,100,\n50.5,-20,,5e6\n")
    layout = file_layout(path, **LAYOUT_ARGS)
    np.testing.assert_allclose(layout.xy_m, [[0, 0], [50.5, -20]])
    np.testing.assert_allclose(layout.radius_m, [100, 300])
    np.testing.assert_allclose(layout.height_m, [10, 10])
    np.testing.assert_allclose(layout.bandwidth_hz, [1e6, 5e6])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x,y\n0,0\n1,oops\n", r"line 3: y='oops' must be a finite number"),
        ("x,y,radius_m\n0,0,-5\n", r"line 2: radius_m='-5' must be a finite number > 0"),
        ("x,z\n0,0\n", r"line 1: header must be x, y"),
        ("x,y\n", r"lists no RSUs"),
    ],
)
def test_malformed_rsu_file_names_file_and_line(tmp_path, text, match):
    path = tmp_path / "rsus.csv"
    path.write_text(text)
    with pytest.raises(MobilityError, match=rf"{path}.*{match}" if "line" in match else match):
        file_layout(path, **LAYOUT_ARGS)


def test_coverage_holes_are_measured_by_lane_length_and_by_positions():
    one = RsuLayout(xy_m=np.array([[0.0, 0.0]]), radius_m=np.array([10.0]), height_m=np.zeros(1),
                    bandwidth_hz=np.ones(1))
    points = np.column_stack([np.arange(40.0) - 19.5, np.zeros(40)])  # a 40 m road centred on the RSU
    assert uncovered_fraction(one, points) == pytest.approx(0.5)
    assert uncovered_fraction(one, points, weights=np.where(np.abs(points[:, 0]) < 10, 3.0, 1.0)) == 0.25
    assert uncovered_fraction(one, np.empty((0, 2))) == 0.0
    samples, length = lane_samples(BOLOGNA_NET)
    assert 10_000 < length.sum() < 200_000  # tens of km of lanes in a 1.8 km x 1.35 km district
    xmin, ymin = samples.min(axis=0)
    xmax, ymax = samples.max(axis=0)
    whole = grid_layout((xmin, ymin, xmax, ymax), rows=1, cols=1, radius_m=5000.0, height_m=0.0, bandwidth_hz=1.0)
    assert network_uncovered_fraction(whole, BOLOGNA_NET) == 0.0
    sparse = junction_layout(BOLOGNA_NET, count=4, min_separation_m=400.0, **LAYOUT_ARGS)
    assert 0.05 < network_uncovered_fraction(sparse, BOLOGNA_NET) < 0.95


def test_malformed_net_file_names_file_and_line(tmp_path):
    broken = tmp_path / "broken.net.xml"
    broken.write_text('<net version="1.20">\n  <edge id="a">\n    <lane id="a_0" shape="0,0 1,1"/>\n  </net>\n')
    with pytest.raises(MobilityError, match=rf"net file {broken}, line 4: malformed XML"):
        junction_degrees(broken)


def _circle(radius: float) -> RsuLayout:
    return RsuLayout(xy_m=np.array([[0.0, 0.0], [1e4, 0.0]]), radius_m=np.array([radius, radius]),
                     height_m=np.zeros(2), bandwidth_hz=np.ones(2))


def test_dwell_time_on_a_straight_road_is_within_five_percent_of_the_true_exit():
    layout, speed, offset = _circle(300.0), 13.9, 120.0
    dt = 0.01
    t = np.arange(0.0, 60.0, dt)
    x = -250.0 + speed * t  # drives east along y = offset at constant speed
    inside = np.hypot(x, offset) <= 300.0
    true_exit = t[np.flatnonzero(inside)[-1]] + dt
    n = len(t[inside][::200])
    xy = np.column_stack([x[inside][::200], np.full(n, offset)])
    estimate = dwell_time_s(layout, np.zeros(n, dtype=np.int64), xy, np.full(n, speed), np.zeros(n))
    truth = true_exit - t[inside][::200]
    assert n > 5 and np.all(np.abs(estimate - truth) <= 0.05 * truth)


def test_dwell_time_edge_cases_and_heading():
    layout = _circle(100.0)
    xy = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [50.0, 0.0], [200.0, 0.0], [1e4 + 60.0, 0.0]])
    serving = np.array([0, 0, 0, -1, 0, 1])
    speed = np.array([10.0, 0.0, 10.0, 10.0, 10.0, 10.0])
    heading = np.array([0.0, 0.0, np.pi / 2, 0.0, 0.0, np.pi])
    np.testing.assert_allclose(dwell_time_s(layout, serving, xy, speed, heading), [10.0, np.inf, 10.0, 0.0, 0.0, 16.0])
    assert dwell_time_s(layout, np.empty(0, dtype=np.int64), np.empty((0, 2)), np.empty(0), np.empty(0)).shape == (0,)


@pytest.mark.parametrize("batch", [1, 7, 10_000])
def test_net_bounds_are_every_lane_points_extremes_in_any_batching(tmp_path, monkeypatch, batch):
    """Against the whole net parsed at once (Bologna, gzipped), and a net with 3-D shapes, whatever the batch."""
    flat = tmp_path / "flat.net.xml"
    flat.write_text('<net><edge id="a"><lane id="a_0" shape="0.5,2.0,7.0 -3.25,4.0,9.0"/></edge>'
                    '<edge id="b"><lane id="b_0" shape="10.0,-1.5 2.0,3.0"/><lane id="b_1"/></edge></net>')
    monkeypatch.setattr(rsu, "_SHAPES_PER_BATCH", batch)
    rsu._net_bounds.cache_clear()
    assert net_bounds(flat) == (-3.25, -1.5, 10.0, 4.0)
    with gzip.open(BOLOGNA_NET) as f:
        points = np.array([p.split(",")[:2] for lane in ET.parse(f).getroot().iter("lane")
                           for p in lane.get("shape", "").split()], dtype=float)
    rsu._net_bounds.cache_clear()
    assert net_bounds(BOLOGNA_NET) == (*points.min(axis=0), *points.max(axis=0))
    rsu._net_bounds.cache_clear()
