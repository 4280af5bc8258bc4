"""Seed 001 reproduced in one run: All-in, Lyapunov, GS and AABA on split federated LoRA (MiniLM, SST-2) in the
paper's static cell (scenarios/seed001-static.toml), through the co-simulation engine, at three (or more) delay
budgets τ̄; then the same comparison under mobility (scenarios/seed001-mobility.toml: SUMO grid, four RSUs,
handovers) at the middle τ̄, which the paper never ran.

For each τ̄ it prints the average number of scheduled devices (over all rounds, and over the second half: the virtual
queue starts empty, so Lyapunov and AABA schedule everyone at first and then pay that back), the average realised
transmission delay per round (the slowest participant's embeddings + features + gradients on the air, the paper's τ_t)
and the held-out accuracy after R rounds, averaged over `--seeds` (each seed draws its own cell, fading, data split and
training noise), and checks the paper's ordering All-in ≥ Lyapunov > GS > AABA on devices and on accuracy.

"Accuracy after R rounds" is the mean of the evaluations in the last quarter of the rounds (every `--eval-every`):
at the server learning rate that learns fastest, a single evaluation swings by ±0.03 from one round to the next, more
than the gaps between schedulers. The comparison is paired: within a seed every scheduler faces the same cell, data
split and fading, so each ordered pair is judged on its per-seed accuracy gaps, mean ± 2 standard errors of that mean
(with one seed, the held-out sampling error of the gap, which leaves the training noise out); a gap inside that margin
is reported as not separated rather than as an ordering. Every run's result is appended to `--results` (JSON lines)
and a run already there is not repeated: an interrupted benchmark resumes, and All-in (which ignores τ̄) runs once
per seed. Then the decision time per round vs the number of vehicles (the paper's Fig. 6,
benchmarks/seed001_decision.py) on the same cell's payload and band. Under mobility it also reports the share of
scheduled exchanges that completed (the rest were cut by a handover or lost coverage). Writes one PNG with all of it.

    .venv/bin/python -m benchmarks.seed001 [--rounds 40] [--tau-bars 0.25 0.5 1] [--seeds 1 2 3]
                                           [--results seed001.jsonl] [--figure seed001.png] [--no-mobility] [--quick]

(run as a module from the repository root: as a script, benchmarks/mobility.py would shadow the mobility package)

--quick is a smoke run: tiny-BERT (hidden 32) with a batch 12× larger, so the payload b·ℓ·d and hence every
scheduling decision match MiniLM's (hidden 384), for a few rounds; its accuracies mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import matplotlib.pyplot as plt
import numpy as np

from benchmarks.seed001_decision import VEHICLES, decision_times_ms
from cosim.engine import run_scenario
from cosim.scenario import Scenario, load_scenario
from cosim.schedulers.lyapunov import AabaConfig, Drift, GsConfig, LyapunovConfig
from cosim.trace import TraceWriter

STATIC = Path(__file__).resolve().parents[1] / "scenarios" / "seed001-static.toml"
MOBILITY = STATIC.with_name("seed001-mobility.toml")
SCHEDULERS = ("all-in", "lyapunov", "gs", "aaba")  # the paper's order, best first
COLORS = dict(zip(SCHEDULERS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
QUICK = ["learning.model=tiny-bert", "learning.batch_size=96", "learning.eval_samples=128"]


@dataclass(frozen=True)
class Result:
    devices: float  # scheduled per round, on average
    late_devices: float  # the same over the second half of the rounds: past the queue's start-up transient
    delay_s: float  # realised transmission delay per round, on average
    completed: float  # share of scheduled exchanges that completed
    accuracy: float  # held-out, mean of the evaluations in the last quarter of the rounds
    accuracy_se: float  # held-out sampling error of `accuracy`; over seeds, the between-seed standard error
    eval_samples: int
    payload_bits: int  # L_k, as the scheduler saw it
    wall_s: float


def seed_mean(runs: list[Result]) -> Result:
    """The mean over seeds; accuracy_se from the between-seed spread (a single run keeps its held-out error)."""
    if len(runs) == 1:
        return runs[0]
    accuracy = np.array([r.accuracy for r in runs])
    means = {field: float(np.mean([getattr(r, field) for r in runs]))
             for field in ("devices", "late_devices", "delay_s", "completed")}
    return Result(**means, accuracy=float(accuracy.mean()),
                  accuracy_se=float(accuracy.std(ddof=1) / math.sqrt(len(runs))), eval_samples=runs[0].eval_samples,
                  payload_bits=runs[0].payload_bits, wall_s=float(sum(r.wall_s for r in runs)))


def scheduler_table(base: Scenario, name: str, tau_bar_s: float, drift: Drift = "linear") -> str:
    """An inline TOML table that replaces the scenario's [scheduler], keeping its Lyapunov knobs where they apply;
    `drift` for Lyapunov and AABA (the default "linear" is left out, so earlier --results entries still match)."""
    if name == "all-in":
        return "{name = 'all-in'}"
    if name == "gs":
        return f"{{name = 'gs', tau_bar_s = {tau_bar_s}}}"
    knobs = base.scheduler if isinstance(base.scheduler, LyapunovConfig | AabaConfig) else LyapunovConfig(
        name="lyapunov")
    drift_key = "" if drift == "linear" else f", drift = '{drift}'"
    return (f"{{name = '{name}', tau_bar_s = {tau_bar_s}, v0 = {knobs.v0}, "
            f"weight_horizon_rounds = {knobs.weight_horizon_rounds}{drift_key}}}")


def tail_start(rounds: int) -> int:
    """The first round (0-based) of the last quarter, over which accuracy is averaged."""
    return rounds * 3 // 4


def simulate(path: Path, overrides: list[str]) -> tuple[Scenario, TraceWriter, float]:
    """One co-simulation: its scenario, its traces (the run directory is thrown away) and its wall time."""
    scenario = load_scenario(path, overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        trace = run_scenario(scenario, Path(out))
    return scenario, trace, time.perf_counter() - start


def run_one(path: Path, overrides: list[str]) -> Result:
    scenario, trace, wall_s = simulate(path, overrides)
    rounds, parts = trace.table("rounds"), trace.table("participants")
    on_air = (parts["download_s"] + parts["upload_delay_s"]).groupby(parts["round"]).max()
    tail = rounds[rounds["round"] >= tail_start(scenario.simulation.rounds)]["accuracy"].dropna()
    accuracy, samples = float(tail.mean()), scenario.learning.eval_samples
    participants = rounds["participants"].to_numpy()
    return Result(float(participants.mean()), float(participants[len(participants) // 2:].mean()),
                  float(on_air.reindex(rounds["round"], fill_value=0.0).mean()),
                  float(rounds["arrivals"].sum() / max(participants.sum(), 1)), accuracy,
                  math.sqrt(accuracy * (1 - accuracy) / samples), samples,
                  int(trace.manifest["payload_bits"]), wall_s)


class ResultLog:
    """Every run's Result, keyed by its scenario file and overrides, appended as one JSON line as soon as the run
    ends: a benchmark interrupted after hours resumes where it stopped, and a run asked for twice (All-in at every τ̄)
    runs once. A torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.results = path, {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.results[entry["key"]] = Result(**entry["result"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def run(self, path: Path, overrides: list[str]) -> Result:
        key = json.dumps([path.name, overrides])
        if key not in self.results:
            self.results[key] = run_one(path, overrides)
            if self.path is not None:
                with self.path.open("a") as log:
                    log.write(json.dumps({"key": key, "result": asdict(self.results[key])}) + "\n")
                    log.flush()
                    os.fsync(log.fileno())
        return self.results[key]


PAIRS = (("all-in", "lyapunov", False), ("lyapunov", "gs", True), ("gs", "aaba", True))  # (better, worse, strict)


def ordering(gaps: dict[tuple[str, str], tuple[float, float]]) -> str:
    """Check All-in ≥ Lyapunov > GS > AABA from gaps[(better, worse)] = (better − worse, margin): a pair breaks it
    when the worse one leads by more than the margin; a strict pair whose gap is within ±margin (or zero) is 'not
    separated'."""
    broken, unseparated = [], []
    for better, worse, strict in PAIRS:
        gap, margin = gaps[better, worse]
        if gap < -margin:
            broken.append(f"{better} < {worse}")
        elif strict and gap <= margin:
            unseparated.append(f"{better} ~ {worse}")
    if broken:
        return "FAILS: " + ", ".join(broken + unseparated)
    return "holds" if not unseparated else "not separated: " + ", ".join(unseparated)


def seed_means(runs: dict[float, dict[str, list[Result]]]) -> dict[float, dict[str, Result]]:
    """The seed mean of every (τ̄, scheduler)."""
    return {tau: {name: seed_mean(results) for name, results in row.items()} for tau, row in runs.items()}


def seed_gaps(runs: dict[str, list[Result]], better: str, worse: str) -> np.ndarray:
    """The accuracy gap better − worse within each seed."""
    return np.array([b.accuracy - w.accuracy for b, w in zip(runs[better], runs[worse], strict=True)])


def paired_gaps(runs: dict[str, list[Result]]) -> dict[tuple[str, str], tuple[float, float]]:
    """Per ordered pair, the mean over seeds of the accuracy gap better − worse within each seed, and twice its
    standard error (one seed: twice the held-out sampling error of the gap)."""
    gaps = {}
    for better, worse, _ in PAIRS:
        diff = seed_gaps(runs, better, worse)
        se = (diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1
              else math.hypot(runs[better][0].accuracy_se, runs[worse][0].accuracy_se))
        gaps[better, worse] = (float(diff.mean()), 2 * float(se))
    return gaps


def compare(path: Path, taus: list[float], seeds: list[int], common: list[str], base: Scenario, log: ResultLog,
            drift: Drift) -> dict[float, dict[str, list[Result]]]:
    """Every scheduler at every τ̄ on the scenario at `path`: one Result per seed, in the order of `seeds`."""
    runs: dict[float, dict[str, list[Result]]] = {tau: {name: [] for name in SCHEDULERS} for tau in taus}
    for seed in seeds:
        for tau in taus:
            for name in SCHEDULERS:
                scheduler = scheduler_table(base, name, tau, drift)
                result = log.run(path, [*common, f"seed={seed}", f"scheduler={scheduler}"])
                runs[tau][name].append(result)
                print(f"  {path.stem} seed {seed} τ̄={tau:g} s {name:<9} {result.devices:5.1f} devices  "
                      f"{result.delay_s:6.3f} s  acc {result.accuracy:.3f}  ({result.wall_s:.0f} s wall)", flush=True)
    return runs


def report(runs: dict[float, dict[str, list[Result]]], rounds: int, seeds: list[int]) -> None:
    """The table of means, the paired accuracy gaps and the ordering verdicts on devices and accuracy, per τ̄."""
    print(f"{'τ̄ (s)':>7} {'scheduler':<10} {'devices/round':>14} {'2nd half':>9} {'avg delay (s)':>14} "
          f"{'completed':>9} {'accuracy':>9} {'± SE':>6}")
    means = seed_means(runs)
    for tau, row in means.items():
        for name, r in row.items():
            print(f"{tau:>7g} {name:<10} {r.devices:>14.2f} {r.late_devices:>9.2f} {r.delay_s:>14.3f} "
                  f"{r.completed:>9.1%} {r.accuracy:>9.3f} {r.accuracy_se:>6.3f}")
    print(f"paired accuracy gaps (mean over seeds ± 2 SE; seeds where the first leads) and the ordering "
          f"All-in ≥ Lyapunov > GS > AABA, accuracy averaged over rounds {tail_start(rounds) + 1}–{rounds}")
    accuracy_holds = True
    for tau, row in runs.items():
        gaps = paired_gaps(row)
        leads = {(b, w): int((seed_gaps(row, b, w) > 0).sum()) for b, w, _ in PAIRS}
        print(f"  τ̄={tau:g} s: " + "; ".join(f"{b} − {w} {gap:+.3f} ± {margin:.3f} ({leads[b, w]}/{len(seeds)})"
                                             for (b, w), (gap, margin) in gaps.items()))
        devices = {(b, w): (means[tau][b].devices - means[tau][w].devices, 0.0) for b, w, _ in PAIRS}
        verdict = ordering(gaps)
        accuracy_holds &= verdict == "holds"
        print(f"      devices {ordering(devices)}; accuracy {verdict}")
    if not accuracy_holds and len(seeds) == 1:
        print("  note: with one seed the margin covers only the held-out sampling noise, not the training noise; "
              "pass several --seeds to measure it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="R, rounds per run (default 40)")
    parser.add_argument("--tau-bars", type=float, nargs="+", default=[0.25, 0.5, 1.0], metavar="S",
                        help="average-delay budgets τ̄ in seconds (default 0.25 0.5 1); mobility runs the middle one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], metavar="N",
                        help="scenario seeds to average over (default: 1)")
    parser.add_argument("--eval-every", type=int, default=4, metavar="N",
                        help="rounds between evaluations; accuracy is their mean over the last quarter (default 4)")
    parser.add_argument("--results", type=Path, default=None, metavar="JSONL",
                        help="append each run's result here and skip the runs already in it (resume); runs are "
                             "keyed by scenario and overrides, not by code: start a new file after changing the code")
    parser.add_argument("--drift", choices=get_args(Drift), default="linear",
                        help="Lyapunov's and AABA's drift term (cosim/schedulers/lyapunov.py; default linear)")
    parser.add_argument("--figure", type=Path, default=Path("seed001.png"), help="PNG to write (default seed001.png)")
    parser.add_argument("--decision-rounds", type=int, default=30, help="rounds timed per point of the Fig. 6 curve")
    parser.add_argument("--no-mobility", action="store_true", help="skip the comparison under mobility")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-BERT, same payload, 4 rounds")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    base = load_scenario(STATIC)
    common = [*(QUICK if args.quick else []), f"simulation.rounds={rounds}", f"learning.eval_every={args.eval_every}"]

    log = ResultLog(args.results)
    taus = sorted(args.tau_bars)
    middle = taus[len(taus) // 2]
    results = compare(STATIC, taus, args.seeds, common, base, log, args.drift)
    mobility = None if args.no_mobility else compare(MOBILITY, [middle], args.seeds, common, base, log, args.drift)
    model = "tiny-BERT (--quick: accuracies meaningless)" if args.quick else "MiniLM"
    print(f"\nseed 001, static cell, {base.mobility.disk.devices} devices, split LoRA on SST-2 with {model}, "
          f"R = {rounds} rounds, mean over seeds {args.seeds}")
    report(results, rounds, args.seeds)
    if mobility is not None:
        print(f"\nseed 001 under mobility: SUMO grid, four RSUs with handovers, split LoRA on SST-2 with {model}, "
              f"R = {rounds} rounds, mean over seeds {args.seeds}")
        report(mobility, rounds, args.seeds)

    payload = results[middle]["lyapunov"][0].payload_bits
    configs = {"lyapunov": LyapunovConfig(name="lyapunov", tau_bar_s=middle),
               "gs": GsConfig(name="gs", tau_bar_s=middle), "aaba": AabaConfig(name="aaba", tau_bar_s=middle)}
    decision = {name: [np.median(decision_times_ms(config, n, 1, args.decision_rounds, np.random.default_rng(n),
                                                   bits=payload, band_hz=base.rsu.bandwidth_hz)) for n in VEHICLES]
                for name, config in configs.items()}
    print(f"\ndecision time per round, median ms (τ̄ = {middle:g} s)")
    print(f"{'vehicles':>8}" + "".join(f"{name:>10}" for name in decision))
    for i, n in enumerate(VEHICLES):
        print(f"{n:>8}" + "".join(f"{times[i]:>10.2f}" for times in decision.values()))

    draw(seed_means(results), None if mobility is None else seed_means(mobility), decision, args.figure, rounds)
    print(f"\nfigure: {args.figure}")


def draw(results: dict[float, dict[str, Result]], mobility: dict[float, dict[str, Result]] | None,
         decision: dict[str, list[float]], path: Path, rounds: int) -> None:
    """Devices, delay and accuracy as grouped bars per τ̄ and the decision-time curves for the static cell; below,
    the same bars and the share of completed exchanges under mobility."""
    fig, axes = plt.subplots(1 if mobility is None else 2, 4, figsize=(18, 4 if mobility is None else 8),
                             squeeze=False)
    panels = [("devices", "scheduled devices / round"), ("delay_s", "avg transmission delay (s)"),
              ("accuracy", f"accuracy, rounds {tail_start(rounds) + 1}–{rounds}")]
    _bars(axes[0], results, panels, "static cell", legend=True)
    for name, times in decision.items():
        axes[0][3].plot(VEHICLES, times, marker="o", color=COLORS[name])
    axes[0][3].set(xscale="log", yscale="log", xlabel="vehicles", ylabel="decision time per round (ms)")
    if mobility is not None:
        _bars(axes[1], mobility, [*panels, ("completed", "completed exchanges")], "SUMO grid, 4 RSUs", legend=False)
    fig.suptitle("Seed 001: split federated LoRA")
    fig.legend(loc="upper right", ncols=5, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=120)


def _bars(axes: list[plt.Axes], results: dict[float, dict[str, Result]], panels: list[tuple[str, str]],
          title: str, *, legend: bool) -> None:
    """One panel of grouped bars (a group per τ̄, a bar per scheduler) per (Result field, label); accuracy with
    its standard error. `legend`: label the artists, once per figure."""
    taus = list(results)
    x = np.arange(len(taus))
    width = 0.8 / len(SCHEDULERS)
    for ax, (field, label) in zip(axes, panels, strict=False):
        for j, name in enumerate(SCHEDULERS):
            error = [results[t][name].accuracy_se for t in taus] if field == "accuracy" else None
            ax.bar(x + (j - (len(SCHEDULERS) - 1) / 2) * width, [getattr(results[t][name], field) for t in taus],
                   width, yerr=error, capsize=3, color=COLORS[name], label=name if ax is axes[0] and legend else None)
        ax.set(xticks=x, xticklabels=[f"τ̄={t:g} s" for t in taus], ylabel=label, title=title)
        values = [getattr(r, field) for row in results.values() for r in row.values()]
        if field in ("accuracy", "completed"):
            ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.03))
    axes[1].scatter(x, taus, marker="_", s=400, color="black", label="τ̄" if legend else None,
                    zorder=3)


if __name__ == "__main__":
    main()
