"""Seed 000's rank decision reproduced in one run: UCB-DUAL vs HomoLoRA vs HetLoRA on the mobility scenario
(scenarios/seed000-mobility.toml: SUMO grid, four RSUs, MiniLM + LoRA on SST-2, global rank 16), paired over seeds.

All three draw their participants by the same random rule from the same stream and split each RSU's band equally,
so within a seed they differ only in the ranks they assign (and in what follows from them: round durations, hence
who is in range when the next round starts): UCB-DUAL learns one per vehicle under its energy budget, HomoLoRA gives
everyone the global rank, HetLoRA a rank per capability tier (cosim/schedulers/rank.py). Per run:

- latency: the mean round duration (first download to last upload or the deadline), and the mean time a participant
  whose update arrived was busy (download, compute, upload);
- energy per participant and round (compute, transmission, idling) and the share of the budget UCB-DUAL targets;
- accuracy: the mean of the held-out evaluations in the last quarter of the rounds (several tasks: their mean, and
  each task's, with the energy each task's participants spent per round: the `tasks` trace table);
- peak memory: each run in a fresh process, its peak RSS plus its SUMO worker's (and peak CUDA memory where a GPU
  trains).

Then the paired gaps UCB-DUAL − baseline per seed, mean ± standard error over seeds, against the seed's claims (more
than 24% lower latency, more than 2.5 points higher average accuracy), and one PNG.

    .venv/bin/python -m benchmarks.seed000 [--rounds 40] [--seeds 1 2 3] [--figure seed000.png] [--quick]
                                           [--set learning.eval_samples=256 ...]

--quick is a smoke run: tiny-BERT, a few rounds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cosim.engine import run_scenario
from cosim.preflight import load_checked
from cosim.report import tail_start
from cosim.scenario import ScenarioError, load_scenario
from cosim.schedulers.rank import UcbDualConfig

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "seed000-mobility.toml"
SCHEDULERS = ("ucb-dual", "homolora", "hetlora")
COLORS = dict(zip(SCHEDULERS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
QUICK = ["learning.model=tiny-bert", "learning.eval_samples=64", "learning.clients=40"]


@dataclass(frozen=True)
class Result:
    latency_s: float  # mean round duration
    busy_s: float  # mean download + compute + upload of the participants whose update arrived
    energy_j: float  # per participant and round
    accuracy: float  # mean of the evaluations in the last quarter of the rounds
    completed: float  # share of participants whose update arrived
    mean_rank: float  # over participants
    peak_rss_mb: float
    peak_cuda_mb: float  # 0 without a GPU
    wall_s: float
    tasks: tuple[tuple[str, float, float], ...] = ()  # per task: (name, accuracy as above, energy per round in J)


METRICS = {"latency_s": "round latency (s)", "busy_s": "participant busy time (s)",
           "energy_j": "energy / participant / round (J)", "accuracy": "accuracy (last quarter)",
           "peak_rss_mb": "peak RSS (MB)"}


def scheduler_table(base: UcbDualConfig, name: str) -> str:
    """An inline TOML table that replaces the scenario's [scheduler]: the same participants for all three, UCB-DUAL
    with the scenario's arms, budget and step, HetLoRA's tiers over the same ranks, HomoLoRA at the task's rank."""
    common = f"participants = {base.participants}"
    if name == "ucb-dual":  # under an [energy_budget] table the budget is its split's (cosim/budget.py)
        budget = f"energy_budget_j = {base.energy_budget_j}, " if "energy_budget_j" in base.model_fields_set else ""
        return f"{{name = 'ucb-dual', {common}, ranks = {base.ranks}, {budget}eta = {base.eta}}}"
    if name == "hetlora":
        return f"{{name = 'hetlora', {common}, ranks = {base.ranks}}}"
    return f"{{name = '{name}', {common}}}"


def run_one(overrides: list[str], path: Path = SCENARIO) -> Result:
    """One co-simulation of the scenario at `path` with `overrides`; meant to run alone in a fresh process, whose
    peak RSS is then this run's."""
    import torch

    scenario = load_scenario(path, overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:  # read the tables before the directory goes
        trace = run_scenario(scenario, Path(out))
        rounds, parts, tasks = trace.table("rounds"), trace.table("participants"), trace.table("tasks")
    arrived = parts[parts["outcome"] == "arrived"]
    late = tail_start(scenario.simulation.rounds)
    tail = rounds[rounds["round"] >= late]["accuracy"].dropna()
    per_task = tuple((str(name), float(rows[rows["round"] >= late]["accuracy"].mean()), float(rows["energy_j"].mean()))
                     for name, rows in tasks.groupby("task", sort=False))
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    # This process's peak plus its SUMO worker's (a child, reaped when the run closed it): an upper bound.
    rss_kb = sum(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return Result(
        latency_s=float(rounds["duration_s"].mean()),
        busy_s=float((arrived["download_s"] + arrived["compute_time_s"] + arrived["upload_delay_s"]).mean()),
        energy_j=float(parts["energy_j"].mean()), accuracy=float(tail.mean()),
        completed=float(len(arrived) / max(len(parts), 1)), mean_rank=float(parts["rank"].mean()),
        peak_rss_mb=rss_kb / 1024, peak_cuda_mb=cuda_mb,
        wall_s=time.perf_counter() - start, tasks=per_task)


def run_isolated(overrides: list[str], path: Path = SCENARIO) -> Result:
    """run_one in a fresh spawned process (a forked one would inherit this one's peak RSS)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_one, overrides, path).result()


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error over seeds (NaN with one seed)."""
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def column(runs: dict[str, list[Result]], name: str, field: str) -> np.ndarray:
    return np.array([getattr(result, field) for result in runs[name]])


def paired(runs: dict[str, list[Result]], base: str) -> dict[str, tuple[float, float, int]]:
    """UCB-DUAL against `base` within each seed: latency and energy as the fraction saved, accuracy in points gained;
    each as (mean, standard error over seeds, seeds where UCB-DUAL is better)."""
    gains = {"latency": 1 - column(runs, "ucb-dual", "latency_s") / column(runs, base, "latency_s"),
             "accuracy": 100 * (column(runs, "ucb-dual", "accuracy") - column(runs, base, "accuracy")),
             "energy": 1 - column(runs, "ucb-dual", "energy_j") / column(runs, base, "energy_j")}
    return {key: (*mean_se(gain), int((gain > 0).sum())) for key, gain in gains.items()}


def verdict(mean: float, se: float, threshold: float) -> str:
    """A claimed gain is shown when the mean minus two standard errors exceeds it; a mean above it within that
    margin (or with one seed, no margin) is not separated."""
    if mean - 2 * se > threshold:
        return "shown"
    return "mean above, not separated (2 SE)" if mean > threshold else "NOT shown"


def report(runs: dict[str, list[Result]], seeds: list[int]) -> None:
    """Means ± SE per scheduler, then the paired gaps against each baseline and the seed's two claims."""
    columns = (*METRICS, "completed", "mean_rank")
    print(f"{'scheduler':<10}" + "".join(f"{field:>18}" for field in columns))
    for name in SCHEDULERS:
        cells = [mean_se(column(runs, name, field)) for field in columns]
        print(f"{name:<10}" + "".join(f"{m:>11.3f} ± {se:<5.3f}" for m, se in cells))
    print(f"paired over seeds {seeds}: UCB-DUAL vs each baseline (mean ± SE; seeds where UCB-DUAL is better)")
    for base in SCHEDULERS[1:]:
        gap = paired(runs, base)
        (lat, lat_se, lat_n), (acc, acc_se, acc_n), (en, en_se, en_n) = gap["latency"], gap["accuracy"], gap["energy"]
        print(f"  vs {base}: latency −{lat:.1%} ± {lat_se:.1%} ({lat_n}/{len(seeds)}), "
              f"accuracy {acc:+.2f} ± {acc_se:.2f} points ({acc_n}/{len(seeds)}), "
              f"energy −{en:.1%} ± {en_se:.1%} ({en_n}/{len(seeds)})")
        print(f"    the seed's claims: latency > 24% lower {verdict(lat, lat_se, 0.24)}; "
              f"accuracy > 2.5 points higher {verdict(acc, acc_se, 2.5)}")
    if len(runs[SCHEDULERS[0]][0].tasks) > 1:
        print("per task (mean ± SE over seeds): accuracy (last quarter), energy of its participants per round (J)")
        for index, (task, _, _) in enumerate(runs[SCHEDULERS[0]][0].tasks):
            cells = []
            for name in SCHEDULERS:
                (acc, acc_se), (energy, energy_se) = (mean_se(np.array([r.tasks[index][k] for r in runs[name]]))
                                                      for k in (1, 2))
                cells.append(f"{name} {acc:.3f} ± {acc_se:.3f}, {energy:.1f} ± {energy_se:.1f} J")
            print(f"  {task:<8} " + "; ".join(cells))


def draw(runs: dict[str, list[Result]], path: Path, title: str) -> None:
    """One bar panel per metric, a bar per scheduler, the standard error over seeds as the error bar."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6))
    for ax, (field, label) in zip(axes, METRICS.items(), strict=True):
        stats = [mean_se(column(runs, name, field)) for name in SCHEDULERS]
        ax.bar(SCHEDULERS, [m for m, _ in stats], yerr=[0 if math.isnan(se) else se for _, se in stats], capsize=4,
               color=[COLORS[name] for name in SCHEDULERS])
        ax.set(title=label)
        if field == "accuracy":
            low = min(m for m, _ in stats)
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(m for m, _ in stats) + 0.03))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="rounds per run (default 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="N",
                        help="scenario seeds to pair over (default 1 2 3)")
    parser.add_argument("--eval-every", type=int, default=4, metavar="N",
                        help="rounds between evaluations; accuracy is their mean over the last quarter (default 4)")
    parser.add_argument("--scenario", type=Path, default=SCENARIO,
                        help="scenario file (default scenarios/seed000-mobility.toml; seed000-multitask.toml: three "
                             "tasks, accuracy their mean)")
    parser.add_argument("--figure", type=Path, default=Path("seed000.png"), help="PNG to write (default seed000.png)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-BERT, 4 rounds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a scenario override for every run (as cosim run --set), e.g. scheduler.participants=6")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    common = [*(QUICK if args.quick else []), f"simulation.rounds={rounds}", f"learning.eval_every={args.eval_every}",
              *args.overrides]
    scenario = load_scenario(args.scenario, common)
    base = scenario.scheduler
    tables = {name: f"scheduler={scheduler_table(base, name)}" for name in SCHEDULERS}
    for table in tables.values():  # every run's scenario can run before the first one starts
        try:
            load_checked(args.scenario, [*common, table])
        except ScenarioError as error:
            raise SystemExit(f"error: {error}") from None
    runs: dict[str, list[Result]] = {name: [] for name in SCHEDULERS}
    for seed in args.seeds:
        for name in SCHEDULERS:
            result = run_isolated([*common, f"seed={seed}", tables[name]], args.scenario)
            runs[name].append(result)
            print(f"  seed {seed} {name:<9} " + "  ".join(f"{f.name} {getattr(result, f.name):.3f}"
                                                         for f in fields(Result) if f.name != "tasks"), flush=True)
    model = "tiny-BERT (--quick: numbers meaningless)" if args.quick else "MiniLM"
    print(f"\nseed 000 on {args.scenario.name}: {scenario.federation.aggregation} federated LoRA with {model}, "
          f"R = {rounds} rounds, overrides {args.overrides}")
    report(runs, args.seeds)
    draw(runs, args.figure, f"Seed 000: UCB-DUAL vs HomoLoRA vs HetLoRA, {args.scenario.stem}, R = {rounds}, "
                            f"seeds {args.seeds}")
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
