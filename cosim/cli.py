"""`cosim` command line: validate a scenario, run it with a progress bar and a closing summary; sweep a study;
report on runs and studies."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosim.preflight import check_scenario, load_checked
from cosim.scenario import Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:
    import pandas as pd

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario and write its traces")
    run.add_argument("scenario", type=Path, nargs="?", help="scenario .toml (optional with --resume)")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>-seed<seed>-<scenario hash>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario field, e.g. --set simulation.rounds=5 (repeatable)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue an interrupted, failed or killed run from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace the run already in the run directory")
    run.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    status = commands.add_parser("status", help="how a run directory's run stands (running, complete, ... killed)")
    status.add_argument("run_dir", type=Path)
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
    sweep = commands.add_parser("sweep", help="run a study: schedulers × varied fields × seeds, resumable")
    sweep.add_argument("study", type=Path)
    sweep.add_argument("--out", type=Path, help="study directory (default: runs/<study name>)")
    sweep.add_argument("--ray", metavar="auto|ADDRESS",
                       help="run on Ray: 'auto' starts a local Ray, an address joins a cluster (default: process pool)")
    sweep.add_argument("--workers", type=int, metavar="N", help="runs at once on this machine (default: all CPUs)")
    report = commands.add_parser("report", help="one HTML page and PNGs comparing runs and studies")
    report.add_argument("inputs", type=Path, nargs="+", metavar="RUN_OR_STUDY")
    report.add_argument("--out", type=Path, required=True, help="directory for report.html and the PNGs")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "status":
        return _status(args.run_dir)
    if args.command == "sweep":
        return _sweep(args.study, args.out, args.ray, args.workers)
    if args.command == "report":
        return _report(args.inputs, args.out)
    try:
        # before anything heavy (SUMO, the model)
        scenario = load_checked(args.scenario, args.overrides, learning=args.command != "mobility")
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "validate":
        print(f"{args.scenario}: ok ({scenario.name}, {scenario.simulation.rounds} rounds, "
              f"scheduler {scenario.scheduler.name}, model {scenario.learning.model}, "
              + (f"tasks {', '.join(task.name for task in scenario.tasks)})" if scenario.tasks
                 else f"dataset {scenario.learning.dataset})"))
        return 0
    return _record(scenario, args.out, args.duration)


def _run(args: argparse.Namespace) -> int:
    """`cosim run`: bad input (scenario, run directory) exits 2, an interruption 130 (SIGINT) or 128 + the signal,
    any other failure 1; each with one line on stderr (the traceback too under --debug)."""
    from cosim.rundir import RunDirError, default_run_dir, prepare_new

    try:
        if args.resume is not None:
            scenario = _resumed_scenario(args)
            check_scenario(scenario, str(args.resume))
            out_dir = args.resume
        else:
            if args.scenario is None:
                raise RunDirError("a scenario file is needed (or --resume RUN_DIR)")
            scenario = load_checked(args.scenario, args.overrides)  # before the run directory, SUMO or the model
            out_dir = args.out or default_run_dir(scenario)
            prepare_new(out_dir, args.overwrite)
    except (ScenarioError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.resume is not None and _finished(out_dir):
        return 0
    return _execute(scenario, out_dir, args)


def _finished(run_dir: Path) -> bool:
    """A complete run asked to resume: say so with its summary (nothing to do is not an error for a script that
    resumes whatever did not finish)."""
    from cosim.trace import read_manifest, read_table

    manifest = read_manifest(run_dir)
    if manifest["status"] != "complete":
        return False
    print(summary_table(read_table(run_dir, "rounds"), read_table(run_dir, "handovers"), manifest))
    print(f"{run_dir} is complete; nothing to resume (--overwrite without --resume runs it again)")
    return True


def _resumed_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario a resumed run continues: the one it was started with, or the file given (checked against it)."""
    from cosim.rundir import RunDirError
    from cosim.scenario import parse_scenario
    from cosim.trace import read_manifest

    if args.out is not None or args.overwrite:
        raise RunDirError("--resume continues RUN_DIR in place; drop --out and --overwrite")
    if args.scenario is not None:
        return load_scenario(args.scenario, args.overrides)
    if args.overrides:
        raise RunDirError("--set changes the scenario, which a resumed run cannot; drop it")
    try:
        manifest = read_manifest(args.resume)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{args.resume} is not a readable run directory ({exc}); check the path") from None
    if "scenario_input" not in manifest:
        raise RunDirError(f"{args.resume} was written by an earlier version that saved no checkpoints; run it again "
                          "with --overwrite")
    return parse_scenario(manifest["scenario_input"], f"{args.resume}/manifest.json")


def _execute(scenario: Scenario, out_dir: Path, args: argparse.Namespace) -> int:
    from tqdm import tqdm  # heavy imports only when a run is asked for
    from transformers.utils import logging as transformers_logging

    from cosim.engine import Interrupted, one_line, run_scenario, signals_interrupt
    from cosim.federation import RoundSummary
    from cosim.rundir import RunDirError
    from mobility.errors import MobilityError

    transformers_logging.disable_progress_bar()  # one progress bar: the run's
    accuracy = math.nan
    with tqdm(total=scenario.simulation.rounds, desc=scenario.name, unit="round", disable=args.quiet) as bar:

        def on_round(summary: RoundSummary) -> None:
            nonlocal accuracy
            accuracy = summary.accuracy if summary.accuracy is not None else accuracy
            bar.set_postfix(t=f"{summary.time_s:.0f}s", part=f"{summary.arrivals}/{summary.participants}",
                            acc=f"{accuracy:.3f}")
            bar.update()

        try:
            with signals_interrupt():
                trace = run_scenario(scenario, out_dir, on_round, resume=args.resume is not None)
        except KeyboardInterrupt as exc:
            name = str(exc) if isinstance(exc, Interrupted) else "SIGINT"
            print(f"interrupted ({name}): the traces of the finished rounds are in {out_dir}; continue with "
                  f"cosim run --resume {out_dir}", file=sys.stderr)
            return 128 + signal.Signals[name].value
        except Exception as exc:
            if args.debug:
                raise
            print(f"error: {one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
            return EXIT_BAD_INPUT if isinstance(exc, MobilityError | ScenarioError | RunDirError) else 1
    print(summary_table(trace.table("rounds"), trace.table("handovers"), trace.manifest))
    print(f"traces: {out_dir}")
    return 0


def _status(run_dir: Path) -> int:
    """`cosim status RUN_DIR`: one line; exit 0 if complete, 1 otherwise, 2 if it is not a run directory."""
    from cosim.trace import read_manifest

    try:
        manifest = read_manifest(run_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {run_dir} is not a readable run directory ({exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    status = manifest["status"]
    rounds = manifest.get("scenario", {}).get("simulation", {}).get("rounds", "?")
    line = f"{run_dir}: {status}, {manifest.get('rounds_completed', '?')}/{rounds} rounds"
    detail = manifest.get("error") or manifest.get("signal")
    if status == "running":
        detail = f"process {manifest.get('pid')} on {manifest.get('hostname')}"
    elif status == "killed":
        detail = f"process {manifest.get('pid')} is gone; continue with cosim run --resume {run_dir}"
    print(f"{line} ({detail})" if detail else line)
    return 0 if status == "complete" else 1


def _sweep(path: Path, out_dir: Path | None, ray: str | None, workers: int | None) -> int:
    from cosim.sweep import CATALOGUE, Point, RayError, load_study, run_study

    try:
        study = load_study(path)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out_dir = out_dir or Path("runs") / study.config.name
    total = len({point.key for point in study.points})
    print(f"{study.config.name}: {len(study.points)} points, {total} runs in {out_dir}")
    done = 0

    def on_finish(point: Point, error: str | None) -> None:
        nonlocal done
        done += 1
        what = ", ".join(f"{name}={value}" for name, value in point.parameters.items())
        print(f"[{done}] {point.key} {what}: {'failed: ' + error if error else 'complete'}", flush=True)

    try:
        outcome = run_study(study, out_dir, ray=ray, workers=workers, on_finish=on_finish)
    except RayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{outcome.run} run, {outcome.skipped} already complete, {outcome.failed} failed; "
          f"catalogue: {out_dir / CATALOGUE}")
    return 1 if outcome.failed else 0


def _report(inputs: list[Path], out_dir: Path) -> int:
    from cosim.report import ReportError, write_report

    try:
        page = write_report(inputs, out_dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report: {page}")
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
