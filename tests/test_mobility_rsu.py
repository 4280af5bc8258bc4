"""RSU grid placement and vehicle-RSU distances."""

import numpy as np
import pytest

from mobility.errors import MobilityError
from mobility.rsu import RsuLayout, grid_layout


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
