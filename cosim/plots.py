"""The figures researchers look at, drawn from run directories' tables (`cosim.trace.read_run`); the report and the
notebooks call these same functions.

Most take `groups`: a label (a scheduler, a study cell) -> the runs that share it, one per seed; curves are the mean
over the group's runs with a band of ± one standard error. A single run is the group {name: [run]}.
"""

from __future__ import annotations

import xml.parsers.expat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Circle

from mobility.netgen import parse_xml

Run = dict[str, Any]
Groups = dict[str, list[Run]]
UNSERVED = "lightgrey"


def color(index: int) -> str:
    return f"C{index % 10}"


def mean_se(series: list[pd.Series], by_index: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where, mean and standard error across series (one per seed), aligned by position (round) or, `by_index`,
    by their index (time); a point counts the series that reach it."""
    table = pd.concat(series if by_index else [s.reset_index(drop=True) for s in series], axis=1)
    counts = table.count(axis=1).to_numpy()
    se = np.where(counts > 1, table.std(axis=1, ddof=1).to_numpy() / np.sqrt(np.maximum(counts, 1)), 0.0)
    return table.index.to_numpy(), table.mean(axis=1).to_numpy(), se


def _band(ax: Axes, x: np.ndarray, mean: np.ndarray, se: np.ndarray, index: int, label: str, **style: Any) -> None:
    ax.plot(x, mean, color=color(index), label=label, **style)
    if np.any(se > 0):
        ax.fill_between(x, mean - se, mean + se, color=color(index), alpha=0.2, linewidth=0)


def _evaluated(run: Run) -> pd.DataFrame:
    rounds = run["rounds"].assign(cumulative_energy_j=run["rounds"]["energy_j"].cumsum())
    return rounds.dropna(subset=["accuracy"]).reset_index(drop=True)


def _accuracy_against(groups: Groups, ax: Axes, x: str) -> None:
    for index, (label, runs) in enumerate(groups.items()):
        evaluated = [_evaluated(run) for run in runs]
        _, mean, se = mean_se([frame["accuracy"] for frame in evaluated])
        _, position, _ = mean_se([frame[x] for frame in evaluated])
        _band(ax, position, mean, se, index, label, marker="o", markersize=3)
    majority = next((run["manifest"].get("majority_rate") for runs in groups.values() for run in runs), None)
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="--", label="majority class")
    ax.legend(fontsize=8)


def accuracy_vs_time(groups: Groups, ax: Axes) -> None:
    _accuracy_against(groups, ax, "end_s")
    ax.set(xlabel="simulated time (s)", ylabel="held-out accuracy", title="Accuracy vs simulated time")


def accuracy_vs_energy(groups: Groups, ax: Axes) -> None:
    _accuracy_against(groups, ax, "cumulative_energy_j")
    ax.set(xlabel="vehicle energy spent (J)", ylabel="held-out accuracy", title="Accuracy vs energy")


def _cdf(groups: Groups, ax: Axes, values: Any) -> None:
    for index, (label, runs) in enumerate(groups.items()):
        pooled = np.sort(np.concatenate([values(run).dropna().to_numpy(dtype=float) for run in runs]))
        ax.step(pooled, np.arange(1, len(pooled) + 1) / max(len(pooled), 1), where="post", color=color(index),
                label=label)
    ax.set(ylabel="CDF", ylim=(0, 1.02))
    ax.legend(fontsize=8)


def round_latency_cdf(groups: Groups, ax: Axes) -> None:
    _cdf(groups, ax, lambda run: run["rounds"]["duration_s"])
    ax.set(xlabel="round latency (s)", title="Round latency")


def upload_delay_cdf(groups: Groups, ax: Axes) -> None:
    _cdf(groups, ax, lambda run: run["participants"]["upload_delay_s"])
    ax.set(xlabel="upload delay (s)", title="Upload delay")


def participants_and_drops(groups: Groups, ax: Axes) -> None:
    for index, (label, runs) in enumerate(groups.items()):
        for column, style in (("participants", "-"), ("drops", "--")):
            x, mean, se = mean_se([run["rounds"][column] for run in runs])
            _band(ax, x, mean, se, index, f"{label} {column}", linestyle=style)
    ax.set(xlabel="round", ylabel="vehicles", title="Participants (solid) and drops (dashed) per round")
    ax.legend(fontsize=8)


def energy_per_vehicle(groups: Groups, ax: Axes) -> None:
    """Each vehicle's energy over the run, vehicles sorted from the most spent; averaged rank by rank over seeds."""
    for index, (label, runs) in enumerate(groups.items()):
        spent = [run["participants"].groupby("vehicle")["energy_j"].sum().sort_values(ascending=False)
                 for run in runs]
        rank, mean, se = mean_se(spent)
        _band(ax, rank + 1, mean, se, index, label, drawstyle="steps-mid")
    ax.set(xlabel="vehicle (sorted, most spent first)", ylabel="energy spent (J)", title="Energy per vehicle")
    ax.legend(fontsize=8)


def battery_levels(groups: Groups, ax: Axes) -> None:
    """The mean and the lowest battery of the vehicles on the road at each sample time."""
    for index, (label, runs) in enumerate(groups.items()):
        for statistic, style in (("mean", "-"), ("min", ":")):
            levels = [run["vehicles"].groupby("time_s")["battery_j"].agg(statistic) for run in runs]
            _band(ax, *mean_se(levels, by_index=True), index, f"{label} {statistic}", linestyle=style)
    ax.set(xlabel="simulated time (s)", ylabel="battery (J)", title="Battery: mean (solid) and lowest (dotted)")
    ax.legend(fontsize=8)


def handover_timeline(run: Run, ax: Axes) -> None:
    """Every association event of one run: a row per vehicle, coloured by the RSU it moves to."""
    events = run["handovers"]
    rows = {vehicle: i for i, vehicle in enumerate(dict.fromkeys(events.sort_values("time_s")["vehicle"]))}
    for kind, marker in (("attach", "o"), ("handover", "s"), ("detach", "x")):
        chosen = events[events["kind"] == kind]
        rsu = chosen["from_rsu"] if kind == "detach" else chosen["to_rsu"]
        ax.scatter(chosen["time_s"], chosen["vehicle"].map(rows), c=[color(r) for r in rsu], marker=marker, s=14,
                   label=kind)
    ax.set(xlabel="simulated time (s)", ylabel="vehicle (by first event)",
           title=f"Association events ({int((events['kind'] == 'handover').sum())} handovers), colour = RSU")
    ax.legend(fontsize=8)


def lane_shapes(net_file: str | Path) -> list[np.ndarray]:
    """Every lane's polyline in a SUMO net file (junction-internal lanes left out)."""
    shapes: list[np.ndarray] = []
    internal = False

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal internal
        if tag == "edge":
            internal = attrs.get("function") == "internal"
        elif tag == "lane" and not internal and "shape" in attrs:
            shapes.append(np.array([point.split(",")[:2] for point in attrs["shape"].split()], dtype=float))

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parse_xml(Path(net_file), parser, "net")
    return shapes


def rsu_map(run: Run, ax: Axes) -> None:
    """The road network (from the run's SUMO net file, when it is still there), the RSUs with their coverage, and
    every vehicle's sampled track, each leg coloured by the RSU serving it (grey: none)."""
    manifest = run["manifest"]
    net_file = manifest.get("net_file")
    if net_file and Path(net_file).is_file():
        ax.add_collection(LineCollection(lane_shapes(net_file), colors="0.75", linewidths=0.8, zorder=1))
    tracks = run["vehicles"].sort_values(["vehicle", "time_s"], kind="stable")
    same = tracks["vehicle"].to_numpy()[1:] == tracks["vehicle"].to_numpy()[:-1]
    xy = tracks[["x_m", "y_m"]].to_numpy()
    legs = np.stack([xy[:-1], xy[1:]], axis=1)[same]
    serving = tracks["rsu"].to_numpy()[:-1][same]
    ax.add_collection(LineCollection(legs, colors=[to_rgba(color(r) if r >= 0 else UNSERVED) for r in serving],
                                     linewidths=1.2, alpha=0.8, zorder=2))
    rsus = manifest.get("rsus", {"xy_m": [], "radius_m": []})
    for index, ((x, y), radius) in enumerate(zip(rsus["xy_m"], rsus["radius_m"], strict=True)):
        ax.add_patch(Circle((x, y), radius, facecolor=to_rgba(color(index), 0.08), edgecolor=color(index),
                            linewidth=1.5, zorder=3))
        ax.plot(x, y, marker="^", markersize=10, color=color(index), markeredgecolor="black", zorder=4)
        ax.annotate(f"RSU {index}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8, zorder=5)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set(xlabel="x (m)", ylabel="y (m)", title="Map: RSU coverage, tracks coloured by serving RSU")


def dwell_times(run: Run) -> pd.Series:
    """How long each association lasted: from an attach or handover to the vehicle's next event (associations
    still open at the end of the run are left out, their length unknown)."""
    events = run["handovers"].sort_values(["vehicle", "time_s"], kind="stable")
    following = events.groupby("vehicle")["time_s"].shift(-1)
    served = (events["to_rsu"] >= 0) & following.notna()
    return (following - events["time_s"])[served].rename("dwell_s")


def dwell_histogram(run: Run, ax: Axes) -> None:
    dwell = dwell_times(run)
    ax.hist(dwell, bins=30, color=color(0))
    ax.set(xlabel="time served by one RSU (s)", ylabel="associations",
           title=f"Dwell times (median {dwell.median():.0f} s)" if len(dwell) else "Dwell times (none ended)")


def handovers_vs_failures(run: Run, ax: Axes) -> None:
    """Per round, the handovers during it against the uploads that a handover or lost coverage cut short."""
    rounds, parts = run["rounds"], run["participants"]
    moves = run["handovers"].query("kind == 'handover'")["time_s"].to_numpy()
    count = [int(((moves >= start) & (moves < end)).sum()) for start, end in zip(rounds["start_s"], rounds["end_s"],
                                                                                   strict=True)]
    cut = parts[parts["outcome"].isin(["handover", "coverage_lost"])].groupby("round").size()
    x = np.arange(len(rounds))
    ax.bar(x - 0.2, count, 0.4, color=color(0), label="handovers")
    ax.bar(x + 0.2, cut.reindex(rounds["round"], fill_value=0).to_numpy(), 0.4, color=color(3),
           label="uploads cut (handover / coverage lost)")
    ax.set(xlabel="round", ylabel="count", title="Handovers vs failed uploads")
    ax.legend(fontsize=8)


def paired_gaps(gaps: pd.DataFrame, ax: Axes) -> None:
    """Paired accuracy gaps (`cosim.report.paired_gaps`): a bar per pair and cell, ± 2 standard errors."""
    labels = [f"{row.better} − {row.worse}" + (f"\n{row.cell}" if row.cell else "") for row in gaps.itertuples()]
    x = np.arange(len(gaps))
    ax.bar(x, gaps["gap"], yerr=gaps["margin"], capsize=4,
           color=[color(1) if gap > margin else color(3) if gap < -margin else "grey"
                  for gap, margin in zip(gaps["gap"], gaps["margin"], strict=True)])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="accuracy gap (paired by seed)", title="Paired accuracy gaps, ± 2 SE")
