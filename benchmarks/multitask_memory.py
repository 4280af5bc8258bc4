"""Seed 000's memory saving: one three-task run (scenarios/seed000-multitask.toml: SST-2, MRPC and QNLI on one
frozen MiniLM base, each task its own LoRA adapters and head) against the same three tasks run one at a time, each
run alone in a fresh process (benchmarks.seed000.run_isolated): peak RSS, and peak CUDA memory where a GPU trains.

    .venv/bin/python -m benchmarks.multitask_memory [--rounds 2] [--set learning.eval_samples=128 ...] [--quick]

--quick is a smoke run: tiny-BERT; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.seed000 import Result, run_isolated
from cosim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "seed000-multitask.toml"
QUICK = ["learning.model=tiny-bert", "learning.eval_samples=64", "learning.max_length=24"]


def one_task(overrides: list[str], index: int) -> list[str]:
    """`overrides` plus a [[tasks]] list that keeps only the scenario's task `index`."""
    task = load_scenario(SCENARIO, overrides).tasks[index]
    fields = ", ".join(f"{key} = {value!r}" for key, value in task.model_dump(exclude_none=True).items())
    return [*overrides, f"tasks=[{{{fields}}}]"]


def measure(overrides: list[str]) -> tuple[Result, list[Result]]:
    """The three-task run, then each task alone."""
    tasks = len(load_scenario(SCENARIO, overrides).tasks)
    together = run_isolated(overrides, SCENARIO)
    return together, [run_isolated(one_task(overrides, index), SCENARIO) for index in range(tasks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    overrides = [*(QUICK if args.quick else []), f"simulation.rounds={args.rounds}", *args.overrides]
    together, alone = measure(overrides)
    names = [task.name for task in load_scenario(SCENARIO, overrides).tasks]
    for name, result in [("all tasks, one base", together), *zip(names, alone, strict=True)]:
        print(f"{name:<22} peak RSS {result.peak_rss_mb:8.0f} MB   peak CUDA {result.peak_cuda_mb:8.0f} MB   "
              f"wall {result.wall_s:6.0f} s")
    separate = sum(result.peak_rss_mb for result in alone)
    largest = max(result.peak_rss_mb for result in alone)
    print(f"three-task run / sum of the single-task runs: {together.peak_rss_mb / separate:.2f} "
          f"({together.peak_rss_mb:.0f} MB vs {separate:.0f} MB; the largest single-task run {largest:.0f} MB)")
    if together.peak_cuda_mb:
        cuda = sum(result.peak_cuda_mb for result in alone)
        print(f"peak CUDA memory: {together.peak_cuda_mb:.0f} MB vs {cuda:.0f} MB ({together.peak_cuda_mb / cuda:.2f})")


if __name__ == "__main__":
    main()
