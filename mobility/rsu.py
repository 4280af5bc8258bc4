"""Road-side unit placement and vehicle-to-RSU geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobility.errors import MobilityError


@dataclass(frozen=True)
class RsuLayout:
    """Per-RSU columns (one row per RSU) so channel maths broadcasts over vehicles x RSUs."""

    xy_m: np.ndarray
    radius_m: np.ndarray
    height_m: np.ndarray
    bandwidth_hz: np.ndarray

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or not np.all(np.isfinite(xy)):
            raise MobilityError(f"RsuLayout.xy_m must be finite with shape (m, 2), got shape {xy.shape}")
        object.__setattr__(self, "xy_m", xy)
        for name, positive in (("radius_m", True), ("height_m", False), ("bandwidth_hz", True)):
            column = np.asarray(getattr(self, name), dtype=np.float64)
            if column.shape != (len(xy),):
                raise MobilityError(f"RsuLayout.{name} must have shape ({len(xy)},) like xy_m, got {column.shape}")
            if not np.all(column > 0 if positive else column >= 0):
                raise MobilityError(f"RsuLayout.{name} must be {'> 0' if positive else '>= 0'}, got {column}")
            object.__setattr__(self, name, column)

    @property
    def count(self) -> int:
        """Number of RSUs."""
        return len(self.xy_m)

    def distances_m(self, xy_m: np.ndarray) -> np.ndarray:
        """(n, m) horizontal distances from each vehicle to each RSU."""
        xy = np.asarray(xy_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise MobilityError(f"distances_m expects vehicle positions of shape (n, 2), got {xy.shape}")
        delta = xy[:, None, :] - self.xy_m[None, :, :]
        return np.hypot(delta[..., 0], delta[..., 1])


def grid_layout(
    bounds: tuple[float, float, float, float],
    *,
    rows: int,
    cols: int,
    radius_m: float,
    height_m: float,
    bandwidth_hz: float,
) -> RsuLayout:
    """RSUs at the centres of a rows x cols grid of equal cells over the network bounds, row-major with row 0 at
    the smallest y, so RSU index = row * cols + col."""
    xmin, ymin, xmax, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise MobilityError(f"grid_layout: bounds {bounds} must be (xmin, ymin, xmax, ymax) with max > min")
    if rows < 1 or cols < 1:
        raise MobilityError(f"grid_layout: rows={rows} and cols={cols} must both be >= 1")
    x = xmin + (np.arange(cols) + 0.5) * (xmax - xmin) / cols
    y = ymin + (np.arange(rows) + 0.5) * (ymax - ymin) / rows
    gx, gy = np.meshgrid(x, y)  # shape (rows, cols): ravel() walks a row before moving to the next one
    m = rows * cols
    return RsuLayout(
        xy_m=np.column_stack([gx.ravel(), gy.ravel()]),
        radius_m=np.full(m, float(radius_m)),
        height_m=np.full(m, float(height_m)),
        bandwidth_hz=np.full(m, float(bandwidth_hz)),
    )
