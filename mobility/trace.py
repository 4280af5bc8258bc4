"""Replay and record floating-car-data (FCD) traces, so a scenario can run without SUMO and a drive can be shared.

Formats: SUMO's `--fcd-output` XML (optionally .gz), or CSV / parquet with columns id, t, x, y, speed and optionally
angle. `angle` is SUMO's convention everywhere (degrees, 0 = north, clockwise), so an FCD file and a table of the same
drive replay identically.
"""

from __future__ import annotations

import os
import tempfile
import xml.parsers.expat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from mobility.errors import MobilityError
from mobility.netgen import parse_xml
from mobility.snapshot import Mobility, Snapshot, sumo_angle_to_heading

TRACE_COLUMNS = ("id", "t", "x", "y", "speed")
_FCD_ATTRIBUTES = ("x", "y", "speed", "angle")
# Tolerance on "time_s lies inside a vehicle's sampled span", so that a float-accumulated clock still hits samples.
_TIME_EPS_S = 1e-9


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

    Samples are held in flat arrays sorted by (vehicle, time); a per-vehicle cursor moves forward with the clock, so
    each advance costs O(vehicles) numpy work regardless of the trace length."""

    def __init__(self, path: Path, *, net_file: Path | None = None) -> None:
        frame = read_trace(path).sort_values(["id", "t"], kind="stable")
        if frame.empty:
            raise MobilityError(f"trace file {path} has no vehicle samples")
        self.net_file = net_file
        self._t = frame["t"].to_numpy()
        self._xy = frame[["x", "y"]].to_numpy()
        self._speed = frame["speed"].to_numpy()
        self._heading_given = frame["angle"].notna().to_numpy()
        self._heading = self._headings(frame)
        ids, start, counts = np.unique(frame["id"].to_numpy(dtype=str), return_index=True, return_counts=True)
        self._ids, self._first, self._last = ids, start, start + counts - 1
        self._cursor = start.copy()
        self._time_s = -np.inf
        self._bounds = (*self._xy.min(axis=0).tolist(), *self._xy.max(axis=0).tolist())

    def _headings(self, frame: pd.DataFrame) -> np.ndarray:
        """From the angle column where given, else along the displacement to the next sample (previous at the end
        of a vehicle's samples): the direction of travel over the segment that starts there."""
        heading = sumo_angle_to_heading(frame["angle"].to_numpy())
        missing = np.isnan(heading)
        if missing.any():
            same_next = np.append(frame["id"].to_numpy()[1:] == frame["id"].to_numpy()[:-1], False)
            step = np.diff(self._xy, axis=0, append=self._xy[-1:])
            step[~same_next] = np.roll(step, 1, axis=0)[~same_next]
            heading[missing] = np.arctan2(step[missing, 1], step[missing, 0])
        return heading

    @property
    def duration(self) -> tuple[float, float]:
        """First and last sample time of the whole trace."""
        return float(self._t.min()), float(self._t.max())

    def advance(self, time_s: float) -> Snapshot:
        """Vehicles whose sampled span contains time_s, interpolated; exact at sample times."""
        if time_s < self._time_s:
            raise MobilityError(f"advance({time_s}) goes back in time; the trace is already at {self._time_s} s")
        self._time_s = float(time_s)
        t = self._t
        active = np.flatnonzero((t[self._first] <= time_s + _TIME_EPS_S) & (t[self._last] >= time_s - _TIME_EPS_S))
        cursor = self._cursor[active]
        while True:  # usually one pass: the clock crosses at most a sample or two per tick
            step = (cursor < self._last[active]) & (t[np.minimum(cursor + 1, len(t) - 1)] <= time_s + _TIME_EPS_S)
            if not step.any():
                break
            cursor = cursor + step
        self._cursor[active] = cursor
        nxt = np.minimum(cursor + 1, self._last[active])
        span = t[nxt] - t[cursor]
        w = np.where(span > 0, np.clip((time_s - t[cursor]) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
        xy = self._xy[cursor] + w[:, None] * (self._xy[nxt] - self._xy[cursor])
        speed = self._speed[cursor] + w * (self._speed[nxt] - self._speed[cursor])
        # Given angles turn the shortest way round; derived ones already are the segment's direction of travel.
        turn = np.angle(np.exp(1j * (self._heading[nxt] - self._heading[cursor])))
        heading = self._heading[cursor] + np.where(self._heading_given[cursor], w * turn, 0.0)
        heading = (heading + np.pi) % (2 * np.pi) - np.pi
        return Snapshot(time_s=float(time_s), ids=self._ids[active], xy_m=xy, speed_mps=speed, heading_rad=heading)

    def bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of all sampled positions."""
        return self._bounds

    def close(self) -> None:
        """Nothing to release; present for the Mobility protocol."""

    def __enter__(self) -> TraceMobility:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def record_trace(mobility: Mobility, out: Path, *, start_s: float, tick_s: float,
                 duration_s: float) -> tuple[int, int]:
    """Sample `mobility` every tick_s from start_s for duration_s and write the trace (.parquet or .csv); return the
    number of rows and of distinct vehicles. If the source fails midway, the samples taken so far are still
    written, then the error is raised."""
    if not (tick_s > 0 and duration_s >= 0 and start_s >= 0):
        raise MobilityError(f"record_trace: tick_s={tick_s} must be > 0, duration_s={duration_s} and "
                            f"start_s={start_s} >= 0")
    suffix = Path(out).name.lower()
    if not suffix.endswith((".parquet", ".csv")):
        raise MobilityError(f"record_trace: output {out} must end in .parquet or .csv")
    parts: list[pd.DataFrame] = []
    steps = int(np.floor(duration_s / tick_s + 1e-9))
    try:
        for k in range(steps + 1):
            snap = mobility.advance(start_s + k * tick_s)
            parts.append(pd.DataFrame({"id": snap.ids, "t": snap.time_s, "x": snap.xy_m[:, 0],
                                       "y": snap.xy_m[:, 1], "speed": snap.speed_mps,
                                       "angle": heading_to_sumo_angle(snap.heading_rad)}))
    finally:
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {c: pd.Series(dtype=str if c == "id" else np.float64) for c in (*TRACE_COLUMNS, "angle")})
        _write_atomic(frame, Path(out))
    return len(frame), frame["id"].nunique()


def _write_atomic(frame: pd.DataFrame, out: Path) -> None:
    """Write beside the target and rename, so a reader never sees a half-written trace."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    Path(tmp).chmod(0o644)  # mkstemp makes it private; a trace is meant to be shared
    try:
        if out.name.lower().endswith(".csv"):
            frame.to_csv(tmp, index=False, float_format="%.17g")
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
