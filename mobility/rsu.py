"""Road-side unit placement (grid, busiest junctions, a CSV of sites), coverage holes and vehicle-to-RSU geometry."""

from __future__ import annotations

import csv
import functools
import math
import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mobility.errors import MobilityError
from mobility.netgen import check_xml, file_digest, parse_xml

if TYPE_CHECKING:
    import sumolib

_CSV_COLUMNS = ("x", "y", "radius_m", "height_m", "bandwidth_hz")


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

    def links(self, xy_m: np.ndarray) -> Links:
        """The vehicle–RSU pairs in coverage (horizontal distance ≤ the RSU's radius), found through a grid of
        cells that lists the RSUs able to cover each cell: O(vehicles × RSUs per cell), not vehicles × RSUs, which
        is what makes a city of 10k vehicles and 100 RSUs cheap. Distances are computed exactly as `distances_m`."""
        xy = np.asarray(xy_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise MobilityError(f"links expects vehicle positions of shape (n, 2), got {xy.shape}")
        candidates = self._coverage_grid.candidates(xy)  # (n, k) RSU indices, -1 pads
        rsu = np.maximum(candidates, 0)
        dx = xy[:, 0, None] - self.xy_m[rsu, 0]
        dy = xy[:, 1, None] - self.xy_m[rsu, 1]
        distance = np.sqrt(dx * dx + dy * dy)
        covered = (candidates >= 0) & (distance <= self.radius_m[rsu])
        row, column = np.nonzero(covered)  # row-major: by vehicle, then by RSU (each cell's list is sorted)
        return Links(row, rsu[row, column], distance[row, column], self.count)

    @functools.cached_property
    def _coverage_grid(self) -> _CoverageGrid:
        return _CoverageGrid(self)

    def distances_m(self, xy_m: np.ndarray) -> np.ndarray:
        """(n, m) horizontal distances from each vehicle to each RSU."""
        xy = np.asarray(xy_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise MobilityError(f"distances_m expects vehicle positions of shape (n, 2), got {xy.shape}")
        dx = xy[:, 0, None] - self.xy_m[None, :, 0]
        dy = xy[:, 1, None] - self.xy_m[None, :, 1]
        dx *= dx
        dy *= dy
        dx += dy
        return np.sqrt(dx, out=dx)  # in place: one (n, m) temporary less than hypot, which a city tick feels


@dataclass(frozen=True)
class Links:
    """Vehicle–RSU links of one instant, sorted by (vehicle row, RSU): the only links the radio layer computes.
    A vehicle is in the coverage of a few RSUs, so at city scale this is a small fraction of vehicles × RSUs."""

    row: np.ndarray  # (L,) int64: the vehicle's index in the snapshot's sorted ids
    rsu: np.ndarray  # (L,) int64
    distance_2d_m: np.ndarray  # (L,)
    num_rsus: int

    @classmethod
    def every(cls, distance_2d_m: np.ndarray) -> Links:
        """Every vehicle to every RSU (small cells, reference computations): distance_2d_m is (n, m)."""
        n, m = distance_2d_m.shape
        return cls(np.repeat(np.arange(n), m), np.tile(np.arange(m), n), distance_2d_m.ravel(), m)

    def __len__(self) -> int:
        return len(self.row)

    @functools.cached_property
    def key(self) -> np.ndarray:
        """row · num_rsus + rsu: ascending, so a link is found by binary search."""
        return self.row * self.num_rsus + self.rsu

    def carried_from(self, previous: Links, vehicle_known: np.ndarray, previous_row: np.ndarray) -> np.ndarray:
        """Index in `previous` of each of these links (its vehicle known before at previous_row, same RSU), -1 for
        a link that is new: how per-link state follows vehicles from one instant to the next."""
        if not len(previous):
            return np.full(len(self), -1, dtype=np.int64)
        at = previous.find(previous_row[self.row], self.rsu)
        return np.where(vehicle_known[self.row], at, -1)

    def find(self, row: np.ndarray, rsu: np.ndarray) -> np.ndarray:
        """Index of each link (row[i], rsu[i]), -1 where there is none (rsu -1 included)."""
        key = np.asarray(row, dtype=np.int64) * self.num_rsus + rsu
        at = np.minimum(np.searchsorted(self.key, key), max(len(self) - 1, 0))
        found = (np.asarray(rsu) >= 0) & (self.key[at] == key) if len(self) else np.zeros(len(key), dtype=bool)
        return np.where(found, at, -1)


class _CoverageGrid:
    """Square cells over the RSUs' coverage box; each cell lists (ascending, padded with -1) every RSU whose disc
    touches it, so a vehicle's covering RSUs are among its cell's few. Points outside the box are covered by no RSU
    and are clipped to an edge cell, whose exact distance test then rejects them."""

    MAX_CELLS = 1 << 20

    def __init__(self, layout: RsuLayout) -> None:
        low = (layout.xy_m - layout.radius_m[:, None]).min(axis=0) if layout.count else np.zeros(2)
        high = (layout.xy_m + layout.radius_m[:, None]).max(axis=0) if layout.count else np.ones(2)
        extent = np.maximum(high - low, 1e-9)
        # Half the median radius keeps each cell's list short; large sparse layouts get coarser cells instead of
        # more memory.
        cell = max(0.5 * float(np.median(layout.radius_m)) if layout.count else 1.0,
                   math.sqrt(float(extent[0] * extent[1]) / self.MAX_CELLS))
        self.low, self.cell = low, cell
        self.shape = (int(extent[0] // cell) + 1, int(extent[1] // cell) + 1)
        cells, members = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for j, ((x, y), r) in enumerate(zip(layout.xy_m, layout.radius_m, strict=True)):
            ix = np.arange(*self._span(x, r, 0))
            iy = np.arange(*self._span(y, r, 1))
            # the point of each cell nearest the RSU, then the disc test
            nx = np.clip(x, low[0] + ix * cell, low[0] + (ix + 1) * cell) - x
            ny = np.clip(y, low[1] + iy * cell, low[1] + (iy + 1) * cell) - y
            cx, cy = np.nonzero(nx[:, None] ** 2 + ny[None, :] ** 2 <= r * r * (1 + 1e-9))
            cells.append(ix[cx] * self.shape[1] + iy[cy])
            members.append(np.full(len(cx), j, dtype=np.int64))
        cell_of, rsu = np.concatenate(cells), np.concatenate(members)
        order = np.lexsort((rsu, cell_of))
        cell_of, rsu = cell_of[order], rsu[order]
        starts = np.searchsorted(cell_of, cell_of)  # first entry of each entry's cell
        self.table = np.full((self.shape[0] * self.shape[1], max(1, int(np.bincount(cell_of).max(initial=0)))), -1,
                             dtype=np.int64)
        self.table[cell_of, np.arange(len(cell_of)) - starts] = rsu

    def _span(self, centre: float, radius: float, axis: int) -> tuple[int, int]:
        first = math.floor((centre - radius - self.low[axis]) / self.cell)
        last = math.floor((centre + radius - self.low[axis]) / self.cell)
        return max(first, 0), min(last, self.shape[axis] - 1) + 1

    def candidates(self, xy: np.ndarray) -> np.ndarray:
        """(n, k) RSUs listed for each point's cell."""
        ix = np.clip(np.floor((xy[:, 0] - self.low[0]) / self.cell), 0, self.shape[0] - 1).astype(np.int64)
        iy = np.clip(np.floor((xy[:, 1] - self.low[1]) / self.cell), 0, self.shape[1] - 1).astype(np.int64)
        return self.table[ix * self.shape[1] + iy]


_SHAPES_PER_BATCH = 10_000


def net_bounds(net_file: Path) -> tuple[float, float, float, float]:
    """xmin, ymin, xmax, ymax over every lane shape of a SUMO network (junction-internal lanes included): SUMO's
    net boundary covers edge centre lines only, and vehicles on outer lanes sit up to a few lane widths beyond it.
    Live SUMO and a trace replay on the same net both place grid RSUs from this box, so they place them alike."""
    return _net_bounds(Path(net_file).resolve(), file_digest(net_file))


@functools.lru_cache(maxsize=8)
def _net_bounds(net_file: Path, digest: str) -> tuple[float, float, float, float]:
    """Streamed over the file (a city's net does not sit in memory twice), lane shapes reduced by batches (one
    array per lane cost a sixth of a warm start from SUMO's saved state at 10k vehicles); cached by content."""
    low, high = np.full(2, math.inf), np.full(2, -math.inf)
    shapes: list[str] = []

    def reduce() -> None:
        if shapes:
            points = np.array([p.split(",")[:2] for p in " ".join(shapes).split()], dtype=np.float64)
            np.minimum(low, points.min(axis=0), out=low)
            np.maximum(high, points.max(axis=0), out=high)
            shapes.clear()

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "lane" and "shape" in attrs:
            shapes.append(attrs["shape"])
            if len(shapes) == _SHAPES_PER_BATCH:
                reduce()

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parse_xml(net_file, parser, "net")
    reduce()
    if not math.isfinite(low[0]):
        raise MobilityError(f"net file {net_file} has no lanes; check the network")
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


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


def spaced_layout(
    bounds: tuple[float, float, float, float], *, spacing_m: float, radius_m: float, height_m: float,
    bandwidth_hz: float,
) -> RsuLayout:
    """A grid of RSUs about spacing_m apart covering the bounds (at least one per axis), same order as grid_layout."""
    if not spacing_m > 0:
        raise MobilityError(f"spaced_layout: spacing_m={spacing_m} must be > 0")
    xmin, ymin, xmax, ymax = bounds
    cols, rows = (max(1, math.ceil(extent / spacing_m)) for extent in (xmax - xmin, ymax - ymin))
    return grid_layout(bounds, rows=rows, cols=cols, radius_m=radius_m, height_m=height_m, bandwidth_hz=bandwidth_hz)


def junction_layout(
    net_file: Path, *, count: int, min_separation_m: float, radius_m: float, height_m: float, bandwidth_hz: float,
) -> RsuLayout:
    """RSUs at the `count` junctions with most connected edges (ties by junction id), greedily skipping junctions
    closer than min_separation_m to one already chosen, so a cluster of joined nodes does not take every RSU."""
    if count < 1:
        raise MobilityError(f"junction_layout: count={count} must be >= 1")
    xy, degree = junction_degrees(net_file)
    order = np.lexsort((np.arange(len(degree)), -degree))  # by degree descending; id order was kept on read
    chosen: list[int] = []
    for i in order:
        if all(math.dist(xy[i], xy[j]) >= min_separation_m for j in chosen):
            chosen.append(int(i))
            if len(chosen) == count:
                break
    if len(chosen) < count:
        raise MobilityError(f"{net_file}: only {len(chosen)} junctions are at least {min_separation_m} m apart, "
                            f"fewer than rsu.count={count}; lower rsu.count or rsu.min_separation_m")
    return RsuLayout(xy_m=xy[chosen], radius_m=np.full(count, float(radius_m)),
                     height_m=np.full(count, float(height_m)), bandwidth_hz=np.full(count, float(bandwidth_hz)))


def junction_degrees(net_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(k, 2) positions and (k,) edge counts (incoming + outgoing) of the network's non-internal junctions with at
    least one edge, sorted by junction id."""
    net = _read_net(net_file)
    nodes = sorted((n for n in net.getNodes() if n.getIncoming() or n.getOutgoing()), key=lambda n: n.getID())
    if not nodes:
        raise MobilityError(f"{net_file}: the network has no junctions with edges; check the net file")
    xy = np.array([n.getCoord()[:2] for n in nodes], dtype=np.float64)
    degree = np.array([len(n.getIncoming()) + len(n.getOutgoing()) for n in nodes], dtype=np.int64)
    return xy, degree


def file_layout(path: Path, *, radius_m: float, height_m: float, bandwidth_hz: float) -> RsuLayout:
    """RSUs from a CSV with header x, y[, radius_m, height_m, bandwidth_hz]; missing or empty optional cells take
    the scenario's [rsu] defaults."""
    path = Path(path)
    defaults = {"radius_m": radius_m, "height_m": height_m, "bandwidth_hz": bandwidth_hz}
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            unknown = [h for h in header if h not in _CSV_COLUMNS]
            if "x" not in header or "y" not in header or unknown:
                raise MobilityError(f"RSU file {path}, line 1: header must be x, y[, radius_m, height_m, "
                                    f"bandwidth_hz], got {', '.join(header) or 'nothing'}")
            rows = [_csv_row(path, reader.line_num, {k.strip(): v for k, v in row.items() if k}, defaults)
                    for row in reader]
    except OSError as exc:
        raise MobilityError(f"RSU file {path} cannot be read ({exc}); fix rsu.file in the scenario") from exc
    if not rows:
        raise MobilityError(f"RSU file {path} lists no RSUs; add one row per RSU below the header")
    columns = np.array(rows, dtype=np.float64)
    return RsuLayout(xy_m=columns[:, :2], radius_m=columns[:, 2], height_m=columns[:, 3], bandwidth_hz=columns[:, 4])


def _csv_row(path: Path, line: int, row: dict[str, str | None], defaults: dict[str, float]) -> list[float]:
    values = []
    for name in _CSV_COLUMNS:
        text = (row.get(name) or "").strip()
        if not text and name in defaults:
            values.append(float(defaults[name]))
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        rule = " > 0" if name in ("radius_m", "bandwidth_hz") else " >= 0" if name == "height_m" else ""
        if not (math.isfinite(value) and (not rule or (value > 0 if rule == " > 0" else value >= 0))):
            raise MobilityError(f"RSU file {path}, line {line}: {name}={text!r} must be a finite number{rule}")
        values.append(value)
    return values


def _read_net(net_file: Path) -> sumolib.net.Net:
    """sumolib's reader, with a malformed or missing file reported by name and line; the last net read is kept
    (by content), as the pre-run checks and the run both place RSUs and measure coverage on it."""
    net_file = Path(net_file)
    if not net_file.is_file():
        raise MobilityError(f"net file {net_file} does not exist; fix the network path in the scenario")
    return _read_net_content(net_file.resolve(), file_digest(net_file))


@functools.lru_cache(maxsize=1)
def _read_net_content(net_file: Path, digest: str) -> sumolib.net.Net:
    import sumolib  # deferred: only junction placement and coverage need it, and it is slow to import

    check_xml(net_file, "net")  # sumolib acts on elements as it streams, so it would fail before the bad line
    try:
        return sumolib.net.readNet(str(net_file))
    except (KeyError, ValueError, AttributeError, TypeError) as exc:
        raise MobilityError(f"net file {net_file} is not a valid SUMO network ({type(exc).__name__}: {exc})") from None


def lane_samples(net_file: Path, step_m: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Points every ~step_m along every lane (internal junction lanes excluded) and the lane length each stands
    for, so length-weighted statistics of the road network reduce to sums over points. Read-only arrays, kept for
    the last net (by content)."""
    _read_net(net_file)  # a missing or malformed file is named
    return _lane_samples(Path(net_file).resolve(), file_digest(net_file), step_m)


@functools.lru_cache(maxsize=1)
def _lane_samples(net_file: Path, digest: str, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    net = _read_net_content(net_file, digest)
    points, weights = [], []
    for edge in net.getEdges(withInternal=False):
        for lane in edge.getLanes():
            shape = np.asarray(lane.getShape(), dtype=np.float64)[:, :2]
            start, delta = shape[:-1], np.diff(shape, axis=0)
            length = np.hypot(delta[:, 0], delta[:, 1])
            k = np.maximum(1, np.ceil(length / step_m)).astype(np.int64)
            segment = np.repeat(np.arange(len(k)), k)
            f = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k) + 0.5) / k[segment]
            points.append(start[segment] + f[:, None] * delta[segment])
            weights.append((length / k)[segment])
    if not points:
        raise MobilityError(f"net file {net_file} has no lanes; check the network")
    out = np.concatenate(points), np.concatenate(weights)
    for array in out:
        array.flags.writeable = False
    return out


def uncovered_fraction(layout: RsuLayout, xy_m: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted fraction of positions outside every RSU's radius: the coverage holes. With lane_samples it is the
    share of lane length; with vehicle positions sampled over a run, the share of vehicle-time uncovered."""
    xy = np.asarray(xy_m, dtype=np.float64)
    w = np.ones(len(xy)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(xy) == 0 or w.sum() <= 0:
        return 0.0
    covered = np.zeros(len(xy), dtype=bool)
    for start in range(0, len(xy), 4096):  # bounded (chunk, m) temporaries for city-sized sample sets
        chunk = slice(start, start + 4096)
        covered[chunk] = (layout.distances_m(xy[chunk]) <= layout.radius_m[None, :]).any(axis=1)
    return float(w[~covered].sum() / w.sum())


def network_uncovered_fraction(layout: RsuLayout, net_file: Path) -> float:
    """Share of the network's lane length outside every RSU's coverage disc."""
    return uncovered_fraction(layout, *lane_samples(net_file))


def dwell_time_s(
    layout: RsuLayout, serving: np.ndarray, xy_m: np.ndarray, speed_mps: np.ndarray, heading_rad: np.ndarray
) -> np.ndarray:
    """(n,) seconds until each vehicle, continuing straight at its current speed and heading, leaves its serving
    RSU's disc: the larger root of |p + v t - c| = r. inf when stopped, 0 when unserved (-1) or already outside.

    A straight-line extrapolation: it ignores turns and speed changes, which is what an RSU can compute from a
    vehicle's reported position, speed and heading at decision time."""
    serving = np.asarray(serving, dtype=np.int64)
    xy = np.asarray(xy_m, dtype=np.float64)
    speed = np.asarray(speed_mps, dtype=np.float64)
    out = np.zeros(len(serving))
    served = serving >= 0
    rsu = serving[served]
    p = xy[served] - layout.xy_m[rsu]
    r = layout.radius_m[rsu]
    heading = np.asarray(heading_rad, dtype=np.float64)[served]
    v = speed[served, None] * np.column_stack([np.cos(heading), np.sin(heading)])
    a = (v * v).sum(axis=1)
    b = (p * v).sum(axis=1)
    c = (p * p).sum(axis=1) - r * r
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
    out[served] = np.where(a > 0, np.where(c <= 0, np.maximum(t, 0.0), 0.0), np.inf)
    return out
