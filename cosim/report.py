"""`cosim report`: one self-contained HTML page (images embedded, opens offline) plus its PNGs, comparing run
directories and studies. A study's runs are grouped by scheduler and varied fields, with means and standard errors
over seeds, and consecutive schedulers (in the study's order) are compared by their accuracy gap paired by seed."""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cosim import plots
from cosim.sweep import CATALOGUE, read_catalogue
from cosim.trace import read_run


class ReportError(ValueError):
    """An input that is neither a run directory nor a study directory."""


def tail_start(rounds: int) -> int:
    """The first round (0-based) of the last quarter, over which the final accuracy is averaged."""
    return rounds * 3 // 4


def final_accuracy(rounds: pd.DataFrame) -> float:
    """The mean of the evaluations in the last quarter of the rounds: one evaluation swings by a few points from one
    round to the next, more than the gaps between schedulers often are."""
    tail = rounds[rounds["round"] >= tail_start(len(rounds))]["accuracy"].dropna()
    return float(tail.mean()) if len(tail) else math.nan


def accuracy_se(accuracy: float, samples: int) -> float:
    """The held-out sampling error of an accuracy measured on `samples` examples."""
    return math.sqrt(accuracy * (1 - accuracy) / samples)


def paired_gap(gaps: np.ndarray, single_se: float) -> tuple[float, float]:
    """The mean over seeds of per-seed gaps, and twice its standard error (one seed: twice `single_se`, the gap's
    held-out sampling error, which leaves the training noise out)."""
    se = gaps.std(ddof=1) / math.sqrt(len(gaps)) if len(gaps) > 1 else single_se
    return float(gaps.mean()), 2 * float(se)


def _label(parameters: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in parameters.items())


def _study(path: Path, runs: Callable[[Path], dict[str, Any]]) -> tuple[plots.Groups, pd.DataFrame]:
    """A study's complete runs grouped by every parameter but the seed, and the paired gaps of consecutive
    schedulers in each cell of the other parameters."""
    catalogue, info = read_catalogue(path)
    complete = catalogue[catalogue["status"] == "complete"].drop_duplicates(info["parameters"])
    cell_fields = [name for name in info["parameters"] if name not in ("scheduler", "seed")]
    groups: plots.Groups = {}
    accuracy: dict[tuple[Any, ...], dict[int, tuple[float, float]]] = {}
    for point in complete[[*info["parameters"], "run"]].itertuples(index=False):
        values = dict(zip([*info["parameters"], "run"], point, strict=True))
        cell = {name: values[name] for name in cell_fields}
        run = runs(path / "runs" / values["run"])
        groups.setdefault(", ".join(filter(None, [values["scheduler"], _label(cell)])), []).append(run)
        final = final_accuracy(run["rounds"])
        samples = run["manifest"]["scenario"]["learning"].get("eval_samples", 1)
        accuracy.setdefault((*cell.values(), values["scheduler"]), {})[values["seed"]] = (
            final, accuracy_se(final, samples) if math.isfinite(final) else math.nan)
    rows = []
    for cell in dict.fromkeys(key[:-1] for key in accuracy):
        present = [name for name in info["schedulers"] if (*cell, name) in accuracy]
        for better, worse in itertools.pairwise(present):
            a, b = accuracy[(*cell, better)], accuracy[(*cell, worse)]
            seeds = sorted(set(a) & set(b))
            diffs = np.array([a[seed][0] - b[seed][0] for seed in seeds])
            gap, margin = paired_gap(diffs, math.hypot(a[seeds[0]][1], b[seeds[0]][1]) if seeds else math.nan)
            rows.append({"cell": _label(dict(zip(cell_fields, cell, strict=True))), "better": better, "worse": worse,
                         "gap": gap, "margin": margin, "leads": int((diffs > 0).sum()), "seeds": len(seeds)})
    return groups, pd.DataFrame(rows, columns=["cell", "better", "worse", "gap", "margin", "leads", "seeds"])


def load(inputs: list[Path]) -> tuple[plots.Groups, pd.DataFrame]:
    """Every input's runs as plot groups (a study's grouped over seeds, a run directory alone), and the paired
    gaps of the studies among them."""
    cache: dict[Path, dict[str, Any]] = {}

    def runs(path: Path) -> dict[str, Any]:
        if path not in cache:
            cache[path] = read_run(path)
        return cache[path]

    groups: plots.Groups = {}
    gaps = []
    for path in map(Path, inputs):
        prefix = f"{path.name}: " if len(inputs) > 1 else ""
        if (path / CATALOGUE).is_file():
            study_groups, study_gaps = _study(path, runs)
            groups.update({prefix + label: members for label, members in study_groups.items()})
            gaps.append(study_gaps.assign(cell=(prefix + study_gaps["cell"]).str.rstrip(": ")))
        elif (path / "manifest.json").is_file():
            groups[path.name] = [runs(path)]
        else:
            raise ReportError(f"{path}: neither a run directory (manifest.json) nor a study directory ({CATALOGUE}); "
                              "pass what `cosim run` or `cosim sweep` wrote")
    if not groups:
        raise ReportError("no complete runs in the inputs; run or resume them first")
    return groups, pd.concat(gaps, ignore_index=True) if gaps else pd.DataFrame()


def summary(groups: plots.Groups) -> pd.DataFrame:
    """Per group, the numbers a comparison starts from: mean ± standard error over its runs."""
    def stat(values: list[float]) -> str:
        mean = f"{np.mean(values):.3f}"
        return mean if len(values) < 2 else f"{mean} ± {np.std(values, ddof=1) / math.sqrt(len(values)):.3f}"

    rows = []
    for label, runs in groups.items():
        per_run = {
            "final accuracy": [final_accuracy(run["rounds"]) for run in runs],
            "round latency (s)": [run["rounds"]["duration_s"].mean() for run in runs],
            "participants / round": [run["rounds"]["participants"].mean() for run in runs],
            "arrived": [run["rounds"]["arrivals"].sum() / max(run["rounds"]["participants"].sum(), 1) for run in runs],
            "vehicle energy (J)": [run["rounds"]["energy_j"].sum() for run in runs],
            "handovers": [float((run["handovers"]["kind"] == "handover").sum()) for run in runs],
        }
        rows.append({"group": label, "runs": len(runs), **{name: stat(values) for name, values in per_run.items()}})
    return pd.DataFrame(rows)


FIGURES: list[tuple[str, str, list[Callable[..., None]], bool]] = [  # file, caption, panels, of one run only
    ("accuracy", "Accuracy against simulated time and against vehicle energy (mean ± SE over seeds)",
     [plots.accuracy_vs_time, plots.accuracy_vs_energy], False),
    ("latency", "Round latency and upload delay", [plots.round_latency_cdf, plots.upload_delay_cdf], False),
    ("participation", "Participants and drops per round", [plots.participants_and_drops], False),
    ("energy", "Energy per vehicle and battery levels", [plots.energy_per_vehicle, plots.battery_levels], False),
    ("handovers", "Handover timeline", [plots.handover_timeline], True),
    ("map", "Road network, RSUs and coverage, vehicle tracks coloured by serving RSU", [plots.rsu_map], True),
]


def _figure(panels: list[Callable[[Any, Any], None]], argument: Any, out: Path, size: tuple[float, float]) -> bytes:
    fig = Figure(figsize=size, layout="tight")  # no pyplot: no display, nothing to close
    for panel, ax in zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True):
        panel(argument, ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    out.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_report(inputs: list[Path], out_dir: Path) -> Path:
    """Draw every figure to `out_dir` as PNG and write `out_dir/report.html` with them embedded; return its path."""
    groups, gaps = load(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label, runs = next(iter(groups.items()))
    sections = []
    for name, caption, panels, single in FIGURES:
        size = (7.0 * len(panels), 6.5 if name == "map" else 4.5)
        png = _figure(panels, runs[0] if single else groups, out_dir / f"{name}.png", size)
        caption += f" — {label}, seed {runs[0]['manifest']['seed']}" if single else ""
        sections.append(_image(name, caption, png))
    tables = [("Summary (mean ± standard error over seeds)", summary(groups))]
    if len(gaps):
        png = _figure([plots.paired_gaps], gaps, out_dir / "gaps.png", (max(6.0, 2.2 * len(gaps)), 4.5))
        sections.insert(1, _image("gaps", "Paired accuracy gaps of consecutive schedulers, ± 2 SE", png))
        tables.append(("Paired accuracy gaps (mean over seeds ± 2 SE; leads: seeds where the first is ahead)",
                       gaps.round(4)))
    page = out_dir / "report.html"
    page.write_text(_PAGE.format(
        title=html.escape(", ".join(Path(path).name for path in inputs)),
        tables="".join(f"<h2>{html.escape(title)}</h2>{table.to_html(index=False, border=0)}"
                       for title, table in tables),
        figures="".join(sections)))
    return page


def _image(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure id="{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cosim report: {title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1500px}}table{{border-collapse:collapse;margin-bottom:1em}}
th,td{{padding:4px 10px;text-align:right;border-bottom:1px solid #ddd}}img{{max-width:100%}}
figure{{margin:1.5em 0}}figcaption{{color:#555}}</style></head>
<body><h1>cosim report: {title}</h1>{tables}{figures}</body></html>
"""
