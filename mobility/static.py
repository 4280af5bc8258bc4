"""The seed papers' static cell: devices scattered uniformly in a disk around one server, never moving."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

from mobility.snapshot import Snapshot


class StaticDiskMobility:
    """`count` devices uniform in a disk of `radius_m` centred on the bounds' centre (put one RSU there).

    Uniform in area: r = R·sqrt(u), so density does not pile up at the centre. Positions come from `seed` alone."""

    net_file: Path | None = None

    def __init__(self, count: int, radius_m: float, seed: int) -> None:
        rng = np.random.default_rng([seed, count])
        r = radius_m * np.sqrt(rng.uniform(size=count))
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        self.radius_m = radius_m
        self._ids = np.sort(np.array([f"dev{i:05d}" for i in range(count)]))
        self._xy = np.column_stack([radius_m + r * np.cos(angle), radius_m + r * np.sin(angle)])

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        n = len(self._ids)
        return Snapshot(float(time_s), self._ids, self._xy, np.zeros(n), np.zeros(n))

    def bounds(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, 2.0 * self.radius_m, 2.0 * self.radius_m)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> StaticDiskMobility:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
