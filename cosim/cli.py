"""`cosim` command line: validate a scenario, run it with a progress bar, print a closing summary."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosim.preflight import check_scenario
from cosim.scenario import Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:
    import pandas as pd

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario and write its traces")
    run.add_argument("scenario", type=Path)
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>-seed<seed>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. --set simulation.rounds=5 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    validate = commands.add_parser("validate", help="check a scenario file and report every problem")
    validate.add_argument("scenario", type=Path)
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mobility = commands.add_parser("mobility", help="mobility tools").add_subparsers(dest="action", required=True)
    record = mobility.add_parser("record", help="record the scenario's live SUMO mobility as a replayable trace")
    record.add_argument("scenario", type=Path)
    record.add_argument("--out", type=Path, required=True, help="trace file, .parquet or .csv")
    record.add_argument("--duration", type=float, default=600.0, metavar="S",
                        help="seconds to record from simulation.start_s, every mobility tick (default 600)")
    record.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, args.overrides)
        check_scenario(scenario, str(args.scenario), learning=args.command != "mobility")  # before anything heavy
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "validate":
        print(f"{args.scenario}: ok ({scenario.name}, {scenario.simulation.rounds} rounds, "
              f"scheduler {scenario.scheduler.name}, model {scenario.learning.model}, dataset "
              f"{scenario.learning.dataset})")
        return 0
    if args.command == "mobility":
        return _record(scenario, args.out, args.duration)
    return _run(scenario, args.out or Path("runs") / f"{scenario.name}-seed{scenario.seed}", quiet=args.quiet)


def _run(scenario: Scenario, out_dir: Path, quiet: bool) -> int:
    from tqdm import tqdm  # heavy imports only when a run is asked for
    from transformers.utils import logging as transformers_logging

    from cosim.engine import run_scenario
    from cosim.federation import RoundSummary
    from mobility.errors import MobilityError

    transformers_logging.disable_progress_bar()  # one progress bar: the run's
    accuracy = math.nan
    with tqdm(total=scenario.simulation.rounds, desc=scenario.name, unit="round", disable=quiet) as bar:

        def on_round(summary: RoundSummary) -> None:
            nonlocal accuracy
            accuracy = summary.accuracy if summary.accuracy is not None else accuracy
            bar.set_postfix(t=f"{summary.time_s:.0f}s", part=f"{summary.arrivals}/{summary.participants}",
                            acc=f"{accuracy:.3f}")
            bar.update()

        try:
            trace = run_scenario(scenario, out_dir, on_round)
        except (MobilityError, ScenarioError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print(f"interrupted: the traces of the finished rounds are in {out_dir}", file=sys.stderr)
            return 130
    print(summary_table(trace.table("rounds"), trace.table("handovers"), trace.manifest))
    print(f"traces: {out_dir}")
    return 0


def _record(scenario: Scenario, out: Path, duration_s: float) -> int:
    from mobility.config import record_scenario
    from mobility.errors import MobilityError
    from mobility.netgen import default_cache_dir

    try:
        rows, vehicles = record_scenario(scenario.mobility, default_cache_dir(), scenario.seed, out,
                                         start_s=scenario.simulation.start_s,
                                         tick_s=scenario.simulation.mobility_tick_s, duration_s=duration_s)
    except MobilityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{out}: {rows} samples of {vehicles} vehicles over {duration_s:g} s from {scenario.simulation.start_s:g} s")
    return 0


def summary_table(rounds: pd.DataFrame, handovers: pd.DataFrame, manifest: dict[str, Any]) -> str:
    """A closing table of what a researcher checks first."""
    evaluated = rounds.dropna(subset=["accuracy"])
    participants = rounds["participants"].sum()
    rows = [
        ("rounds", f"{len(rounds)}"),
        ("simulated time", f"{rounds['end_s'].max() - rounds['start_s'].min():.1f} s" if len(rounds) else "-"),
        ("mean round duration", f"{rounds['duration_s'].mean():.2f} s"),
        ("participants / round", f"{rounds['participants'].mean():.1f}"),
        ("arrived updates", f"{rounds['arrivals'].sum()} of {participants}"
                            f" ({rounds['arrivals'].sum() / max(participants, 1):.0%})"),
        ("uploaded", f"{rounds['upload_bytes'].sum() / 1e6:.1f} MB"),
        ("vehicle energy", f"{rounds['energy_j'].sum():.1f} J"),
        ("handovers", f"{int((handovers['kind'] == 'handover').sum())}"),
        ("uncovered lane length", f"{manifest['uncovered_lane_fraction']:.1%}" if "uncovered_lane_fraction" in manifest
         else "-"),
        ("final accuracy", f"{evaluated['accuracy'].iloc[-1]:.3f}" if len(evaluated) else "-"),
        ("majority-class rate", f"{manifest.get('majority_rate', math.nan):.3f}"),
        ("wall time", f"{manifest.get('wall_time_s', math.nan):.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    sys.exit(main())
