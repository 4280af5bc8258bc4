"""Seed 002 in one run: SOFT + TSFA against its baselines on flat federated LoRA (MiniLM), in the static cell
(scenarios/seed002-static.toml) and under SUMO mobility (scenarios/seed002-mobility.toml), paired over seeds.

Methods, all at the same latency limit τ̄ except the ideal:
  ideal          all-in, dense uploads, no latency limit (the "ideal" of the seed)
  dense-limited  GS at τ̄ per round with dense uploads: vehicles that cannot finish in time are not scheduled
  top-k          GS at τ̄ with every upload at a fixed density (`--density`), components by norm score
  random-k       the same with random components
  tsfa           the scenario itself: TSFA (offline covariance preset, long-term τ̄ by virtual queue, per-vehicle
                 densities) with SOFT's norm selection and orthogonality regulariser

Per run: the bytes uploaded over all rounds (arrived uploads only), scheduled vehicles per round, the mean per-round
air time, the share of scheduled uploads that arrived, and the held-out accuracy (mean of the evaluations in the last
quarter of the rounds, as benchmarks/seed001.py). Each method's upload reduction and accuracy gap against the ideal
are paired within each seed, then given as mean ± standard error over seeds (one seed: the held-out sampling error of
the gap). Writes one PNG.

    .venv/bin/python -m benchmarks.seed002 [--rounds 20] [--seeds 1 2 3] [--dataset sst2] [--no-mobility | --no-static]
                                           [--density 0.25] [--figure seed002.png] [--set KEY=VALUE] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from benchmarks.seed001 import seed_gaps
from cosim.engine import run_scenario
from cosim.preflight import load_checked
from cosim.report import tail_start
from cosim.scenario import ScenarioError, load_scenario
from cosim.trace import read_run

STATIC = Path(__file__).resolve().parents[1] / "scenarios" / "seed002-static.toml"
MOBILITY = STATIC.with_name("seed002-mobility.toml")
METHODS = ("ideal", "dense-limited", "top-k", "random-k", "tsfa")
COLORS = dict(zip(METHODS, ("tab:blue", "tab:gray", "tab:green", "tab:red", "tab:orange"), strict=True))
QUICK = ["learning.model=tiny-bert", "learning.eval_samples=64", "learning.samples_per_client=16"]


def method_overrides(method: str, tau_bar_s: float, density: float) -> list[str]:
    """--set overrides that turn the seed-002 scenario (TSFA) into `method`."""
    dense = "learning.compression={density = 1.0}"
    fixed = "learning.compression={density = %g, selection = '%s'}"
    return {
        "ideal": ["scheduler={name = 'all-in'}", dense],
        "dense-limited": [f"scheduler={{name = 'gs', tau_bar_s = {tau_bar_s}}}", dense],
        "top-k": [f"scheduler={{name = 'gs', tau_bar_s = {tau_bar_s}}}", fixed % (density, "norm")],
        "random-k": [f"scheduler={{name = 'gs', tau_bar_s = {tau_bar_s}}}", fixed % (density, "random")],
        "tsfa": [],
    }[method]


@dataclass(frozen=True)
class Result:
    upload_mb: float  # arrived uploads over all rounds, 10^6 bytes
    participants: float  # scheduled per round
    air_time_s: float  # the slowest participant's scheduled air time per round, on average
    completed: float  # share of scheduled uploads that arrived
    density: float  # mean density of the arrived uploads
    accuracy: float  # held-out, mean of the last quarter's evaluations
    accuracy_se: float  # its held-out sampling error
    wall_s: float


def run_one(path: Path, overrides: list[str]) -> Result:
    """One co-simulation, its run directory read back and thrown away."""
    scenario = load_scenario(path, overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run_scenario(scenario, Path(out) / "run")
        run = read_run(Path(out) / "run")
    wall_s = time.perf_counter() - start
    rounds, parts = run["rounds"], run["participants"]
    air = parts.groupby("round")["scheduled_air_time_s"].max().reindex(rounds["round"], fill_value=0.0)
    arrived = parts[parts["outcome"] == "arrived"]
    tail = rounds[rounds["round"] >= tail_start(scenario.simulation.rounds)]["accuracy"].dropna()
    accuracy = float(tail.mean())
    return Result(float(rounds["upload_bytes"].sum() / 1e6), float(rounds["participants"].mean()),
                  float(air.mean()), float(len(arrived) / max(len(parts), 1)),
                  float(arrived["density"].mean()) if len(arrived) else float("nan"), accuracy,
                  math.sqrt(accuracy * (1 - accuracy) / scenario.learning.eval_samples), wall_s)


def paired(runs: dict[str, list[Result]], method: str) -> tuple[float, float, float, float]:
    """(upload reduction vs the ideal, its SE; accuracy gap method − ideal, its SE), paired within seeds."""
    reduction = np.array([1 - m.upload_mb / i.upload_mb for m, i in zip(runs[method], runs["ideal"], strict=True)])
    gap = seed_gaps(runs, method, "ideal")
    if len(gap) > 1:
        return (float(reduction.mean()), float(reduction.std(ddof=1) / math.sqrt(len(gap))), float(gap.mean()),
                float(gap.std(ddof=1) / math.sqrt(len(gap))))
    held_out = math.hypot(runs[method][0].accuracy_se, runs["ideal"][0].accuracy_se)
    return float(reduction[0]), 0.0, float(gap[0]), held_out


def compare(path: Path, seeds: list[int], common: list[str], tau_bar_s: float,
            density: float) -> dict[str, list[Result]]:
    runs: dict[str, list[Result]] = {method: [] for method in METHODS}
    for seed in seeds:
        for method in METHODS:
            result = run_one(path, [*common, f"seed={seed}", *method_overrides(method, tau_bar_s, density)])
            runs[method].append(result)
            print(f"  {path.stem} seed {seed} {method:<13} {result.upload_mb:8.2f} MB  {result.participants:5.1f} "
                  f"/round  {result.air_time_s:6.3f} s  acc {result.accuracy:.3f}  ({result.wall_s:.0f} s wall)",
                  flush=True)
    return runs


def report(runs: dict[str, list[Result]]) -> None:
    print(f"{'method':<14}{'upload MB':>10}{'reduction':>16}{'vehicles':>9}{'air s':>8}{'arrived':>8}{'density':>8}"
          f"{'accuracy':>9}{'gap vs ideal':>18}")
    for method in METHODS:
        mean = {field: np.mean([getattr(r, field) for r in runs[method]])
                for field in ("upload_mb", "participants", "air_time_s", "completed", "density", "accuracy")}
        reduction, reduction_se, gap, gap_se = paired(runs, method)
        print(f"{method:<14}{mean['upload_mb']:>10.2f}{100 * reduction:>9.1f} ± {100 * reduction_se:<4.1f}%"
              f"{mean['participants']:>9.1f}{mean['air_time_s']:>8.3f}{mean['completed']:>8.2f}{mean['density']:>8.2f}"
              f"{mean['accuracy']:>9.3f}{gap:>+11.3f} ± {gap_se:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per run (default 20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="N", help="scenario seeds")
    parser.add_argument("--dataset", default="sst2", help="learning.dataset: sst2, or a pair task (mrpc, qnli, rte)")
    parser.add_argument("--density", type=float, default=0.25, help="the fixed density of top-k and random-k")
    parser.add_argument("--eval-every", type=int, default=5, metavar="N", help="rounds between evaluations")
    parser.add_argument("--figure", type=Path, default=Path("seed002.png"), help="PNG to write (default seed002.png)")
    parser.add_argument("--no-mobility", action="store_true", help="skip the comparison under mobility")
    parser.add_argument("--no-static", action="store_true", help="skip the comparison in the static cell")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a scenario override for every run, e.g. learning.local_steps=1 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-BERT, 4 rounds, one seed")
    args = parser.parse_args()
    rounds, seeds = (4, args.seeds[:1]) if args.quick else (args.rounds, args.seeds)
    common = [*(QUICK if args.quick else []), f"simulation.rounds={rounds}", f"learning.eval_every={args.eval_every}",
              f"learning.dataset={args.dataset}", *args.set]
    settings = {title: path for title, path, skip in (("static cell", STATIC, args.no_static),
                                                      ("SUMO grid", MOBILITY, args.no_mobility)) if not skip}
    if not settings:
        parser.error("--no-static and --no-mobility leave nothing to compare")
    tau_bars = {path: load_scenario(path).scheduler.tau_bar_s for path in settings.values()}
    for path, tau_bar in tau_bars.items():  # every run's scenario can run before the first one starts
        for method in METHODS:
            try:
                load_checked(path, [*common, *method_overrides(method, tau_bar, args.density)])
            except ScenarioError as error:
                raise SystemExit(f"error: {error}") from None
    results = {}
    for title, path in settings.items():
        tau_bar = tau_bars[path]
        results[title] = compare(path, seeds, common, tau_bar, args.density)
        print(f"\nseed 002, {title}, flat LoRA on {args.dataset}, τ̄ = {tau_bar:g} s, {rounds} rounds, seeds {seeds}"
              f"{' (--quick: tiny-BERT, accuracies meaningless)' if args.quick else ''}")
        report(results[title])
    draw(results, args.figure, f"{args.dataset}, {rounds} rounds, seeds {seeds}")
    print(f"\nfigure: {args.figure}")


def draw(results: dict[str, dict[str, list[Result]]], path: Path, subtitle: str) -> None:
    """Per setting: upload volume and accuracy per method, seed means with their standard errors."""
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.8 * len(results)), squeeze=False)
    x = np.arange(len(METHODS))
    for row, (title, runs) in zip(axes, results.items(), strict=True):
        for ax, field, label in ((row[0], "upload_mb", "uploaded (MB)"), (row[1], "accuracy", "accuracy")):
            values = np.array([[getattr(r, field) for r in runs[m]] for m in METHODS])
            error = values.std(axis=1, ddof=1) / math.sqrt(values.shape[1]) if values.shape[1] > 1 else None
            ax.bar(x, values.mean(axis=1), yerr=error, capsize=3, color=[COLORS[m] for m in METHODS])
            ax.set(xticks=x, xticklabels=METHODS, ylabel=label, title=title)
            if field == "accuracy":
                ax.set_ylim(max(0.0, values.min() - 0.05), min(1.0, values.max() + 0.03))
    fig.suptitle(f"Seed 002: SOFT + TSFA vs baselines ({subtitle})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
