"""Checks that a run will not be silently empty: demand inside the simulated window, RSUs on the network, and the
error for a run that ended without a single participant. Each check returns one line per problem, naming the
scenario field to change."""

from __future__ import annotations

import functools
import math
import xml.parsers.expat
from collections.abc import Collection
from pathlib import Path

import numpy as np

from mobility.errors import EmptyRunError
from mobility.netgen import SumoFiles, file_digest, parse_xml
from mobility.rsu import RsuLayout, network_uncovered_fraction

# SUMO's abstract vehicle classes (https://sumo.dlr.de/docs/Definition_of_Vehicles,_Vehicle_Types,_and_Routes.html).
VEHICLE_CLASSES = (
    "passenger", "private", "taxi", "bus", "coach", "delivery", "truck", "trailer", "emergency", "authority", "army",
    "vip", "hov", "motorcycle", "moped", "bicycle", "scooter", "evehicle", "tram", "rail_urban", "rail",
    "rail_electric", "rail_fast", "subway", "ship", "aircraft", "drone", "container", "cable_car", "wheelchair",
    "pedestrian", "custom1", "custom2", "ignoring",
)
# SUMO's built-in types, used by vehicles that name no type.
_DEFAULT_TYPES = {"DEFAULT_VEHTYPE": "passenger", "DEFAULT_BIKETYPE": "bicycle", "DEFAULT_TAXITYPE": "taxi",
                  "DEFAULT_PEDTYPE": "pedestrian", "DEFAULT_RAILTYPE": "rail", "DEFAULT_CONTAINERTYPE": "ignoring"}


def demand_problems(files: SumoFiles, *, begin_s: float, end_s: float, classes: Collection[str]) -> list[str]:
    """A problem if no vehicle (of `classes`, when given) departs between SUMO's begin and the run's end: SUMO drops
    vehicles that depart before its begin, and none arrive after the run."""
    departures: list[tuple[float, float, str]] = []
    types: dict[str, set[str]] = {}
    for path in (*files.additional, *files.routes):
        file_departures, file_types = _demand(Path(path).resolve(), file_digest(path))
        departures += file_departures
        for name, members in file_types.items():
            types.setdefault(name, set()).update(members)
    if not departures:
        return ["mobility.demand: the route files define no vehicle, trip or flow; add demand"]

    def vclasses(vtype: str) -> set[str]:
        members = types.get(vtype, {_DEFAULT_TYPES.get(vtype, "passenger")})
        return {_DEFAULT_TYPES.get(m, "passenger") if m not in VEHICLE_CLASSES else m for m in members}

    kept = [(a, b) for a, b, vtype in departures if not classes or vclasses(vtype) & set(classes)]
    if any(a <= end_s and b >= begin_s for a, b in kept):
        return []
    first, last = min(a for a, _, _ in departures), max(b for _, b, _ in departures)
    who = f"no vehicle of mobility.vehicle_classes ({', '.join(classes)})" if classes else "no vehicle"
    return [f"mobility.demand: {who} departs between SUMO's begin at {begin_s:g} s and the run's end at "
            f"{end_s:g} s (demand departs {first:g}-{last:g} s); set mobility.begin_s and simulation.start_s "
            "inside the demand"]


@functools.lru_cache(maxsize=32)
def _demand(path: Path, digest: str) -> tuple[list[tuple[float, float, str]], dict[str, set[str]]]:
    """(earliest, latest departure, type) of every vehicle, trip and flow in a route or additional file, and each
    vType's (or vTypeDistribution's) vehicle classes; streamed, cached by content. A departure that is not a number
    ("triggered", a clock time) counts as any time, so it never causes a refusal."""
    departures: list[tuple[float, float, str]] = []
    types: dict[str, set[str]] = {}
    distribution: list[str] = []

    def seconds(text: str | None, default: float) -> float:
        try:
            return default if text is None else float(text)
        except ValueError:
            return math.nan

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "vTypeDistribution":
            distribution.append(attrs.get("id", ""))
            types.setdefault(distribution[-1], set()).update(attrs.get("vTypes", "").split())
        elif tag == "vType":
            types[attrs.get("id", "")] = {attrs.get("vClass", "passenger")}
            if distribution:
                types[distribution[-1]].add(attrs.get("id", ""))
        elif tag in ("vehicle", "trip", "flow"):
            first = seconds(attrs.get("depart") if tag != "flow" else attrs.get("begin"), 0.0)
            last = first if tag != "flow" else seconds(attrs.get("end"), math.inf)
            first, last = (-math.inf, math.inf) if math.isnan(first) or math.isnan(last) else (first, last)
            departures.append((first, last, attrs.get("type", "DEFAULT_VEHTYPE")))

    def end(tag: str) -> None:
        if tag == "vTypeDistribution":
            distribution.pop()

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parse_xml(path, parser, "SUMO demand")
    return departures, types


def rsu_problems(layout: RsuLayout, bounds: tuple[float, float, float, float], net_file: Path | None) -> list[str]:
    """Problems if RSUs lie where no road can reach them (their disc misses the network's bounding box, e.g.
    lon/lat in an RSU file) or, with a net file, if they cover none of its lanes."""
    xmin, ymin, xmax, ymax = bounds
    gap = np.hypot(np.maximum(0.0, np.maximum(xmin - layout.xy_m[:, 0], layout.xy_m[:, 0] - xmax)),
                   np.maximum(0.0, np.maximum(ymin - layout.xy_m[:, 1], layout.xy_m[:, 1] - ymax)))
    outside = np.flatnonzero(gap > layout.radius_m)
    if len(outside):
        x, y = layout.xy_m[outside[0]]
        return [f"rsu: {len(outside)} of {layout.count} RSUs lie outside the network (RSU {outside[0]} at "
                f"x={x:g}, y={y:g}; network x {xmin:.0f}..{xmax:.0f} m, y {ymin:.0f}..{ymax:.0f} m); RSU positions "
                "are SUMO x/y metres, not lon/lat: fix rsu.file or the layout"]
    if net_file is not None:
        covered = 1.0 - network_uncovered_fraction(layout, net_file)
        if covered == 0.0:
            return ["rsu: the RSUs cover 0% of the network's lane length; raise rsu.radius_m or move the RSUs "
                    "(rsu.layout, rsu.file)"]
    return []


def no_participant_error(*, vehicles_seen: int, served_seen: int, window_s: tuple[float, float]) -> EmptyRunError:
    """The error for a run that ended with no participant at all, saying which stage came up empty."""
    start_s, end_s = window_s
    if vehicles_seen == 0:
        why = ("no vehicle was in the network; check mobility.begin_s, simulation.start_s and the demand "
               "(mobility.vehicle_classes filters it too)")
    elif served_seen == 0:
        why = f"{vehicles_seen} vehicles drove but none was in an RSU's coverage; check the [rsu] layout and radius_m"
    else:
        why = (f"{served_seen} of {vehicles_seen} vehicles were covered but the scheduler picked none; check "
               "[scheduler] and the vehicles' batteries ([energy] battery_j)")
    return EmptyRunError(f"the run from {start_s:g} s to {end_s:g} s had no participant at all: {why}")
