"""Cost of writing a run's traces per round, early and late in a long run.

Feeds a TraceWriter the rows of a city-scale round (participants, vehicle samples, handovers) for `--rounds` rounds,
timing each round's add + flush (building the record batches and appending them) in CPU time of this process (other
processes on a shared machine do not count), and prints the median per round over rounds 10-59 and over the last
fifty, and their ratio: streamed appends cost the same at round 500 as at
round 10 (a writer that rewrote every table each round would grow linearly). Then times the one consolidation into
parquet at the end of the run.

    .venv/bin/python benchmarks/trace.py [--rounds 500] [--vehicles 2000] [--samples-per-round 2] [--participants 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="at least 110")
    parser.add_argument("--vehicles", type=int, default=2000)
    parser.add_argument("--samples-per-round", type=int, default=2, help="vehicle samples per round")
    parser.add_argument("--participants", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    prepared = [round_rows(r, args, rng) for r in range(3)]  # row building is the engine's, not the writer's, cost
    with tempfile.TemporaryDirectory() as out:
        trace = TraceWriter(Path(out), {"status": "running"})
        seconds = []
        for r in range(args.rounds):
            rows = prepared[r % len(prepared)]
            start = time.process_time()
            for name, table_rows in rows.items():
                trace.add(name, table_rows)
            trace.flush(rounds_completed=r + 1)
            seconds.append(time.process_time() - start)
        start = time.perf_counter()
        trace.consolidate(keep_streams=False)
        consolidate_s = time.perf_counter() - start
    per_round = sum(len(rows) for rows in prepared[0].values())
    early, late = statistics.median(seconds[10:60]), statistics.median(seconds[-50:])
    print(f"{per_round:,} rows per round, {args.rounds} rounds ({per_round * args.rounds:,} rows)")
    print(f"trace writing per round (CPU): rounds 10-59 {early * 1e3:.1f} ms, "
          f"rounds {args.rounds - 50}-{args.rounds - 1} {late * 1e3:.1f} ms, ratio {late / early:.2f}")
    print(f"consolidation into parquet at the end: {consolidate_s:.2f} s")


if __name__ == "__main__":
    main()
