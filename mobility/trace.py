"""Replay and record floating-car-data (FCD) traces, so a scenario can run without SUMO and a drive can be shared.

Formats: SUMO's `--fcd-output` XML (optionally .gz), or CSV / parquet with columns id, t, x, y, speed and optionally
angle. `angle` is SUMO's convention everywhere (degrees, 0 = north, clockwise), so an FCD file and a table of the same
drive replay identically.

Both directions stream, so memory does not grow with the drive's length: recording appends a parquet row group every
~`_ROWS_PER_GROUP` samples (parquet: columnar, compressed, and read back by row group with pyarrow alone); replay
keeps one state row per vehicle and reads the file forward by time window, never holding more than the samples
between the clock and each vehicle's next sample. A parquet trace must be sorted by time for that (recorded traces
are); CSV, FCD XML and unsorted parquet are loaded whole and sorted once.
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.parsers.expat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mobility.errors import MobilityError
from mobility.netgen import parse_xml
from mobility.rsu import net_bounds
from mobility.snapshot import Mobility, Snapshot, sumo_angle_to_heading

TRACE_COLUMNS = ("id", "t", "x", "y", "speed")
_FCD_ATTRIBUTES = ("x", "y", "speed", "angle")
# Tolerance on "time_s lies inside a vehicle's sampled span", so that a float-accumulated clock still hits samples.
_TIME_EPS_S = 1e-9
_ROWS_PER_GROUP = 1 << 16
_BOUNDS_KEY = b"cosim.bounds"  # parquet metadata: the recorded source's bounds (its net's lanes), for RSU placement
_SCHEMA = pa.schema([("id", pa.string()), *((c, pa.float64()) for c in ("t", "x", "y", "speed", "angle"))])


def heading_to_sumo_angle(heading_rad: np.ndarray) -> np.ndarray:
    """Inverse of sumo_angle_to_heading, in [0, 360)."""
    return (90.0 - np.rad2deg(np.asarray(heading_rad, dtype=np.float64))) % 360.0


def read_trace(path: Path) -> pd.DataFrame:
    """Load a trace into columns id (str), t, x, y, speed, angle (float64; angle NaN where the file has none)."""
    path = Path(path)
    if not path.is_file():
        raise MobilityError(f"trace file {path} does not exist; record one with `cosim mobility record` or fix "
                            "mobility.trace in the scenario")
    name = path.name.lower()
    if name.endswith((".xml", ".xml.gz")):
        frame = _read_fcd_xml(path)
    elif name.endswith((".csv", ".csv.gz")):
        frame = _read_table(path, lambda: pd.read_csv(path, dtype={"id": str}))
    elif name.endswith(".parquet"):
        frame = _read_table(path, lambda: pd.read_parquet(path))
    else:
        raise MobilityError(f"trace file {path}: unknown format; use SUMO FCD .xml[.gz], .csv[.gz] or .parquet")
    return _validated(frame, path)


def _read_table(path: Path, load: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    try:
        return load()
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise MobilityError(f"trace file {path} cannot be read: {exc}") from exc


def _read_fcd_xml(path: Path) -> pd.DataFrame:
    """Stream the FCD XML (expat, so errors carry a line) into columns; persons and containers are skipped.

    SUMO labels an FCD timestep with the time the step began but writes the positions reached at its end, which
    live TraCI/libsumo report one step later; times are shifted by the timestep spacing (the step length, unless
    the file was written with a coarser --fcd-output.period) so a replay lines up with the live run."""
    columns: dict[str, list] = {"id": [], "t": [], **{a: [] for a in _FCD_ATTRIBUTES}}
    state = {"time": None}
    parser = xml.parsers.expat.ParserCreate()

    def problem(message: str) -> MobilityError:
        return MobilityError(f"trace file {path}, line {parser.CurrentLineNumber}: {message}")

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "timestep":
            try:
                state["time"] = float(attrs["time"])
            except (KeyError, ValueError):
                raise problem(f"<timestep> needs a numeric time, got {attrs.get('time')!r}") from None
        elif tag == "vehicle":
            if state["time"] is None:
                raise problem("<vehicle> outside a <timestep>; is this a SUMO --fcd-output file?")
            if "x" not in attrs and "lon" in attrs:
                raise problem("geo coordinates (lon/lat); record without --fcd-output.geo so x/y are in metres")
            try:
                columns["id"].append(attrs["id"])
                values = [float(attrs[a]) if a in attrs or a != "angle" else np.nan for a in _FCD_ATTRIBUTES]
            except (KeyError, ValueError) as exc:
                raise problem(f"<vehicle> needs id, x, y and speed as numbers ({type(exc).__name__}: {exc})") from None
            columns["t"].append(state["time"])
            for a, value in zip(_FCD_ATTRIBUTES, values, strict=True):
                columns[a].append(value)

    def end(tag: str) -> None:
        if tag == "timestep":
            state["time"] = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parse_xml(path, parser, "trace")
    frame = pd.DataFrame(columns)
    spacing = np.diff(np.unique(frame["t"].to_numpy(dtype=np.float64)))
    if len(spacing):
        frame["t"] = frame["t"] + spacing.min()
    return frame


def _validated(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in TRACE_COLUMNS if c not in frame.columns]
    if missing:
        raise MobilityError(f"trace file {path}: missing column(s) {', '.join(missing)}; expected "
                            f"{', '.join(TRACE_COLUMNS)} [, angle]")
    out = pd.DataFrame({"id": frame["id"].astype(str)})
    is_csv = path.name.lower().endswith((".csv", ".csv.gz"))

    def where(row: int) -> str:
        """A CSV row by its line in the file (after the header); other formats by 0-based row."""
        return f"line {row + 2}" if is_csv else f"row {row}"

    for column in ("t", "x", "y", "speed", "angle"):
        if column not in frame.columns:
            out[column] = np.nan
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values)) if column != "angle" else np.flatnonzero(
            frame[column].notna().to_numpy() & ~np.isfinite(values))
        if len(bad):
            raise MobilityError(f"trace file {path}, {where(bad[0])}: column {column} must be a finite number, got "
                                f"{frame[column].iloc[bad[0]]!r} ({len(bad)} such row(s))")
        out[column] = values
    if (out["speed"] < 0).any():
        row = int(np.flatnonzero(out["speed"].to_numpy() < 0)[0])
        raise MobilityError(f"trace file {path}, {where(row)}: speed must be >= 0")
    duplicated = out.duplicated(["id", "t"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise MobilityError(f"trace file {path}, {where(row)}: vehicle {out['id'].iloc[row]!r} has two samples at "
                            f"t={out['t'].iloc[row]}")
    return out


class TraceMobility:
    """Replays a trace: a vehicle exists from its first to its last sample, linearly interpolated in between.

    One pass over the file at start finds each vehicle's first and last sample time; then per-vehicle state (the
    sample at or before the clock, the one before it, the next one) moves forward with the clock as the file is read
    by time window, so each advance costs O(vehicles) numpy work and memory stays bounded however long the trace."""

    def __init__(self, path: Path, *, net_file: Path | None = None) -> None:
        self.path, self.net_file = Path(path), net_file
        self._source = _TimeOrdered(self.path)
        ids, first, last = self._source.lifetimes()
        self._ids, self._first, self._last = ids, first, last
        n = len(ids)
        self._prev = np.full((n, 5), np.nan)  # t, x, y, speed, angle of the sample at or before the clock
        self._before_xy = np.full((n, 2), np.nan)  # position of the sample before that one
        self._ahead = np.empty((0, 6))  # read rows after the clock: slot, t, x, y, speed, angle (time-sorted)
        self._rows = self._source.chunks()
        self._exhausted = False
        self._bounds: tuple[float, float, float, float] | None = None
        self._time_s = -np.inf

    @staticmethod
    def bounds_of(path: Path, net_file: Path | None = None) -> tuple[float, float, float, float]:
        """Where RSUs are placed for a replay: the net's lane bounds (as live SUMO), else those recorded with the
        trace, else the bounding box of its samples."""
        return net_bounds(net_file) if net_file is not None else _TimeOrdered(Path(path)).bounds()

    @property
    def duration(self) -> tuple[float, float]:
        """First and last sample time of the whole trace."""
        return float(self._first.min()), float(self._last.max())

    def _read(self) -> bool:
        """Append the next chunk of rows to the look-ahead; False at the end of the file."""
        if self._exhausted:
            return False
        chunk = next(self._rows, None)
        if chunk is None:
            self._exhausted = True
            return False
        slot = np.searchsorted(self._ids, chunk["id"].to_numpy(dtype=str))
        rows = np.column_stack([slot, chunk[["t", "x", "y", "speed", "angle"]].to_numpy(dtype=np.float64)])
        self._ahead = np.concatenate([self._ahead, rows])
        return True

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        """Vehicles whose sampled span contains time_s, interpolated; exact at sample times."""
        if time_s < self._time_s:
            raise MobilityError(f"advance({time_s}) goes back in time; the trace is already at {self._time_s} s")
        self._time_s = float(time_s)
        horizon = time_s + _TIME_EPS_S
        while (not len(self._ahead) or self._ahead[-1, 1] <= horizon) and self._read():
            pass
        self._consume(int(np.searchsorted(self._ahead[:, 1], horizon, side="right")))
        active = np.flatnonzero((self._first <= horizon) & (self._last >= time_s - _TIME_EPS_S))
        waiting = active[self._last[active] > self._prev[active, 0]]  # need their next sample
        while not np.isin(waiting, self._ahead[:, 0]).all() and self._read():
            pass
        slots, first_row = np.unique(self._ahead[:, 0].astype(np.int64), return_index=True)
        prev = self._prev[active]
        nxt = prev.copy()
        has_next = np.isin(active, slots)
        nxt[has_next] = self._ahead[first_row[np.searchsorted(slots, active[has_next])], 1:]
        span = nxt[:, 0] - prev[:, 0]
        w = np.where(span > 0, np.clip((time_s - prev[:, 0]) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
        xy = prev[:, 1:3] + w[:, None] * (nxt[:, 1:3] - prev[:, 1:3])
        speed = prev[:, 3] + w * (nxt[:, 3] - prev[:, 3])
        given = ~np.isnan(prev[:, 4])
        # Without angles: the direction of travel over the segment that starts at the sample (the one ending there
        # for a vehicle's last sample). Given angles turn the shortest way round.
        step = np.where(has_next[:, None], nxt[:, 1:3] - prev[:, 1:3], prev[:, 1:3] - self._before_xy[active])
        step = np.nan_to_num(step)
        heading_prev = np.where(given, sumo_angle_to_heading(prev[:, 4]), np.arctan2(step[:, 1], step[:, 0]))
        heading_next = sumo_angle_to_heading(nxt[:, 4])
        turn = np.angle(np.exp(1j * (heading_next - heading_prev)))
        heading = heading_prev + np.where(given & has_next, w * np.nan_to_num(turn), 0.0)
        heading = (heading + np.pi) % (2 * np.pi) - np.pi
        return Snapshot(time_s=float(time_s), ids=self._ids[active], xy_m=xy, speed_mps=speed, heading_rad=heading)

    def _consume(self, count: int) -> None:
        """Move the first `count` look-ahead rows (all at or before the clock) into the per-vehicle state."""
        if count == 0:
            return
        rows, self._ahead = self._ahead[:count], self._ahead[count:]
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]  # by vehicle, then time
        slot = rows[:, 0].astype(np.int64)
        boundary = slot[1:] != slot[:-1]
        last = np.flatnonzero(np.append(boundary, True))  # each vehicle's latest row
        alone = np.insert(boundary, 0, True)[last]  # ... which is its only row here
        before = self._prev[slot[last], 1:3]
        before[~alone] = rows[last[~alone] - 1, 2:4]
        self._before_xy[slot[last]] = before
        self._prev[slot[last]] = rows[last, 1:]

    def bounds(self) -> tuple[float, float, float, float]:
        """See bounds_of."""
        if self._bounds is None:
            self._bounds = self.bounds_of(self.path, self.net_file)
        return self._bounds

    def close(self) -> None:
        """Nothing to release; present for the Mobility protocol."""

    def __enter__(self) -> TraceMobility:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _TimeOrdered:
    """A trace file read as time-sorted chunks: a time-sorted parquet by row group, anything else loaded whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._frame: pd.DataFrame | None = None
        self._parquet = path.name.lower().endswith(".parquet") and path.is_file()
        if not self._parquet:
            self._frame = read_trace(path).sort_values("t", kind="stable")

    def _parquet_chunks(self) -> Iterator[pd.DataFrame]:
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=_ROWS_PER_GROUP):
                yield _validated(batch.to_pandas(), self.path)
        except (OSError, pa.ArrowException) as exc:
            raise MobilityError(f"trace file {self.path} cannot be read: {exc}") from exc

    def chunks(self) -> Iterator[pd.DataFrame]:
        if self._frame is not None:
            yield from (self._frame.iloc[i:i + _ROWS_PER_GROUP] for i in range(0, len(self._frame), _ROWS_PER_GROUP))
        else:
            yield from self._parquet_chunks()

    def lifetimes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted vehicle ids and each one's first and last sample time, in one streamed pass; an unsorted parquet
        falls back to being loaded whole."""
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        latest = -np.inf
        for chunk in self.chunks():
            t = chunk["t"].to_numpy()
            if len(t) and (t[0] < latest or np.any(np.diff(t) < 0)):
                self._frame = read_trace(self.path).sort_values("t", kind="stable")
                return self.lifetimes()
            latest = t[-1] if len(t) else latest
            span = chunk.groupby("id", sort=False)["t"].agg(["min", "max"])
            for vehicle, low, high in zip(span.index, span["min"], span["max"], strict=True):
                first.setdefault(vehicle, low)
                last[vehicle] = high
        if not first:
            raise MobilityError(f"trace file {self.path} has no vehicle samples")
        ids = np.array(sorted(first), dtype=str)
        return ids, np.array([first[v] for v in ids]), np.array([last[v] for v in ids])

    def bounds(self) -> tuple[float, float, float, float]:
        """The bounds recorded with a parquet trace, else the bounding box of its samples."""
        if self._parquet:
            try:
                metadata = pq.read_schema(self.path).metadata or {}
            except (OSError, pa.ArrowException) as exc:
                raise MobilityError(f"trace file {self.path} cannot be read: {exc}") from exc
            if _BOUNDS_KEY in metadata:
                return tuple(json.loads(metadata[_BOUNDS_KEY]))
        low, high = np.full(2, np.inf), np.full(2, -np.inf)
        for chunk in self.chunks():
            xy = chunk[["x", "y"]].to_numpy()
            low = np.minimum(low, xy.min(axis=0, initial=np.inf))
            high = np.maximum(high, xy.max(axis=0, initial=-np.inf))
        return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def trace_span(path: Path) -> tuple[float, float]:
    """First and last sample time of a trace (a parquet trace from its column statistics, without reading it)."""
    path = Path(path)
    if path.name.lower().endswith(".parquet") and path.is_file():
        try:
            meta = pq.ParquetFile(path).metadata
            column = meta.schema.names.index("t")
            stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
            if stats and all(s is not None and s.has_min_max for s in stats):
                return float(min(s.min for s in stats)), float(max(s.max for s in stats))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise MobilityError(f"trace file {path} cannot be read: {exc}") from exc
    frame = read_trace(path)
    if frame.empty:
        raise MobilityError(f"trace file {path} has no vehicle samples")
    return float(frame["t"].min()), float(frame["t"].max())


def record_trace(mobility: Mobility, out: Path, *, start_s: float, tick_s: float,
                 duration_s: float) -> tuple[int, int]:
    """Sample `mobility` every tick_s from start_s for duration_s and write the trace (.parquet or .csv), streamed
    a row group at a time; return the number of rows and of distinct vehicles. If the source fails midway, the
    samples taken so far are still written, then the error is raised."""
    if not (tick_s > 0 and duration_s >= 0 and start_s >= 0):
        raise MobilityError(f"record_trace: tick_s={tick_s} must be > 0, duration_s={duration_s} and "
                            f"start_s={start_s} >= 0")
    out = Path(out)
    csv = out.name.lower().endswith(".csv")
    if not (csv or out.name.lower().endswith(".parquet")):
        raise MobilityError(f"record_trace: output {out} must end in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp makes it private; a trace is meant to be shared
    schema = _SCHEMA.with_metadata({_BOUNDS_KEY: json.dumps(list(mobility.bounds())).encode()})
    writer = None if csv else pq.ParquetWriter(tmp, schema)
    parts: list[pd.DataFrame] = []
    rows, vehicles, written = 0, set(), False

    def flush() -> None:
        nonlocal written
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {c: pd.Series(dtype=str if c == "id" else np.float64) for c in _SCHEMA.names})
        parts.clear()
        if writer is not None:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        else:
            frame.to_csv(tmp, mode="a", header=not written, index=False, float_format="%.17g")
        written = True

    steps = int(np.floor(duration_s / tick_s + 1e-9))
    try:
        for k in range(steps + 1):
            snap = mobility.advance(start_s + k * tick_s, next_s=start_s + (k + 1) * tick_s if k < steps else None)
            parts.append(pd.DataFrame({"id": snap.ids, "t": snap.time_s, "x": snap.xy_m[:, 0], "y": snap.xy_m[:, 1],
                                       "speed": snap.speed_mps, "angle": heading_to_sumo_angle(snap.heading_rad)}))
            rows += snap.count
            vehicles.update(snap.ids.tolist())
            if sum(len(p) for p in parts) >= _ROWS_PER_GROUP:
                flush()
    finally:
        try:
            if parts or not written:
                flush()
            if writer is not None:
                writer.close()
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return rows, len(vehicles)
