"""Cost of writing a run's traces per round, early and late in a long run.

Feeds a TraceWriter the rows of a city-scale round (participants, vehicle samples, handovers) for `--rounds` rounds,
timing each round's add + flush (building the record batches and appending them) in CPU time of this process (other
processes on a shared machine do not count), and prints the median per round over rounds 10-59 and over the last
fifty, and their ratio: streamed appends cost the same at round 500 as at
round 10 (a writer that rewrote every table each round would grow linearly). Then times the one consolidation into
parquet at the end of the run.

    .venv/bin/python -m benchmarks.trace [--rounds 500] [--vehicles 2000] [--samples-per-round 2] [--participants 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosim.trace import SCHEMA, TraceWriter


def round_rows(round_index: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, list[dict]]:
    """Plausible rows of one round: every column of each table, random values."""
    ids = [f"veh{i}" for i in range(args.vehicles)]
    rows: dict[str, list[dict]] = {}
    for name, count in (("participants", args.participants), ("vehicles", args.vehicles * args.samples_per_round),
                        ("handovers", args.vehicles // 50), ("rounds", 1)):
        values = {column: (rng.random(count).tolist() if dtype == "float64" else rng.integers(0, 8, count).tolist()
                           if dtype == "int64" else [ids[i % len(ids)] for i in range(count)])
                  for column, dtype in SCHEMA[name].items()}
        if "round" in values:
            values["round"] = [round_index] * count
        rows[name] = [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
    return rows


@dataclass(frozen=True)
class TraceCost:
    rows_per_round: int
    rounds: int
    early_s: float  # median CPU seconds per round over rounds 10-59
    late_s: float  # ... over the last fifty rounds
    consolidate_s: float  # wall seconds of the parquet consolidation at the end


def measure(rounds: int = 500, vehicles: int = 2000, samples_per_round: int = 2, participants: int = 50) -> TraceCost:
    """Time a TraceWriter fed `rounds` rounds of a city's rows (see the module's docstring)."""
    if rounds < 110:
        raise SystemExit(f"--rounds {rounds}: at least 110, so that rounds 10-59 and the last fifty do not overlap")
    args = argparse.Namespace(vehicles=vehicles, samples_per_round=samples_per_round, participants=participants)
    rng = np.random.default_rng(0)
    prepared = [round_rows(r, args, rng) for r in range(3)]  # row building is the engine's, not the writer's, cost
    with tempfile.TemporaryDirectory() as out:
        trace = TraceWriter(Path(out), {"status": "running"})
        seconds = []
        for r in range(rounds):
            rows = prepared[r % len(prepared)]
            start = time.process_time()
            for name, table_rows in rows.items():
                trace.add(name, table_rows)
            trace.flush(rounds_completed=r + 1)
            seconds.append(time.process_time() - start)
        start = time.perf_counter()
        trace.consolidate(keep_streams=False)
        consolidate_s = time.perf_counter() - start
    return TraceCost(sum(len(rows) for rows in prepared[0].values()), rounds, statistics.median(seconds[10:60]),
                     statistics.median(seconds[-50:]), consolidate_s)


def report(cost: TraceCost) -> str:
    return (f"trace writing per round (CPU; {cost.rows_per_round:,} rows a round, {cost.rounds} rounds, "
            f"{cost.rows_per_round * cost.rounds:,} rows): rounds 10-59 {cost.early_s * 1e3:.1f} ms, rounds "
            f"{cost.rounds - 50}-{cost.rounds - 1} {cost.late_s * 1e3:.1f} ms, ratio {cost.late_s / cost.early_s:.2f}; "
            f"consolidation into parquet at the end {cost.consolidate_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="at least 110")
    parser.add_argument("--vehicles", type=int, default=2000)
    parser.add_argument("--samples-per-round", type=int, default=2, help="vehicle samples per round")
    parser.add_argument("--participants", type=int, default=50)
    args = parser.parse_args()
    print(report(measure(args.rounds, args.vehicles, args.samples_per_round, args.participants)))


if __name__ == "__main__":
    main()
