"""Where vehicles are at one instant, and the protocol every mobility source implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


def sumo_angle_to_heading(angle_deg: np.ndarray) -> np.ndarray:
    """SUMO degrees (0 = north, clockwise) to math radians (0 = +x, counter-clockwise), wrapped to [-pi, pi)."""
    heading = np.deg2rad(90.0 - np.asarray(angle_deg, dtype=np.float64))
    return (heading + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class Snapshot:
    """Column arrays (one row per vehicle, rows sorted by id) so downstream maths stays vectorised."""

    time_s: float
    ids: np.ndarray
    xy_m: np.ndarray
    speed_mps: np.ndarray
    heading_rad: np.ndarray

    @classmethod
    def empty(cls, time_s: float) -> Snapshot:
        """A snapshot with no vehicles, e.g. before the first departure."""
        return cls(
            time_s=float(time_s),
            ids=np.array([], dtype=str),
            xy_m=np.empty((0, 2), dtype=np.float64),
            speed_mps=np.empty(0, dtype=np.float64),
            heading_rad=np.empty(0, dtype=np.float64),
        )

    @property
    def count(self) -> int:
        """Number of vehicles in the network at time_s."""
        return len(self.ids)


class Mobility(Protocol):
    """A source of vehicle positions driven by the simulation clock (it keeps no clock of its own)."""

    net_file: Path | None  # the road network, when the source has one (junction RSUs, coverage holes)

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        """Move the world forward to time_s (monotone) and return where vehicles are. next_s, when the caller
        knows it, is the time it will ask for next: a source that can (PipelinedSumo) prepares it meanwhile."""
        ...

    def bounds(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax of the road network, for placing RSUs."""
        ...

    def close(self) -> None:
        """Release the backing simulator."""
        ...
