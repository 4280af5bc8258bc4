"""Wires a scenario's components into SimPy processes on one clock and runs it to a trace directory, checkpointed
and resumable, with a manifest status that always says how the run ended."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import torch

from cosim import checkpoint
from cosim.federation import FlatFederation, HierarchicalFederation, RoundSummary, Task, make_task
from cosim.rng import stream
from cosim.rundir import RunDirError, process_identity, scenario_hash
from cosim.scenario import Scenario
from cosim.schedulers import make_scheduler
from cosim.trace import SCHEMA, TraceWriter, frame, package_versions, read_manifest, read_stream
from cosim.world import World
from mobility.association import HandoverEvent
from mobility.checks import no_participant_error
from mobility.config import open_mobility, place_rsus
from mobility.netgen import default_cache_dir
from mobility.rsu import network_uncovered_fraction


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) raised like Ctrl-C, so the run ends flushed and "interrupted"."""


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Interrupted once in the main thread (a second one while the run closes
    its traces is ignored)."""
    fired = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupted(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message with whitespace collapsed, prefixed by its type unless it is one of
    the project's own errors, whose messages are written for the user."""
    text = " ".join(str(exc).split())
    own = type(exc).__module__.split(".")[0] in ("cosim", "mobility", "models")
    return text if own and text else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_scenario(scenario: Scenario, out_dir: Path, on_round: Callable[[RoundSummary], None] = lambda summary: None,
                 resume: bool = False) -> TraceWriter:
    """Run every round of `scenario` into `out_dir` (with `resume`: continue the run there from its last intact
    checkpoint). Traces are appended after each round and consolidated into parquet when the run ends; the manifest's
    status ends "complete", "interrupted" (KeyboardInterrupt or Interrupted: re-raised) or "failed" (with the
    one-line error; re-raised), set-up included."""
    wall_start = time.perf_counter()
    torch.manual_seed(scenario.seed)
    saved, skipped = _resumable(out_dir, scenario) if resume else (None, [])
    if saved is None:  # starting from round 0: no checkpoint of an earlier run in this directory may be used later
        shutil.rmtree(Path(out_dir) / checkpoint.DIRECTORY, ignore_errors=True)
    trace = _open_trace(scenario, out_dir, saved, skipped if resume else None)
    status, ending = "failed", {}
    replay: _Replay | None = None
    try:
        task = make_task(scenario.learning, scenario.seed, reciprocal_downlink=scenario.rsu.downlink == "reciprocal",
                         tasks=scenario.tasks)
        trace.write_manifest(upload_bits=task.upload_bits, download_bits=task.download_bits,
                             payload_bits=task.payload_bits, majority_rate=task.majority_rate)
        replay = _Replay(task, trace, saved) if saved is not None else None
        every = scenario.simulation.checkpoint_every_rounds

        def after_round(summary: RoundSummary) -> None:
            done = summary.round_index + 1
            if replay is not None and replay.absorb(trace, summary.round_index):
                on_round(summary)
                return
            due = every and done % every == 0 and done < scenario.simulation.rounds
            trace.flush(durable=bool(due), rounds_completed=done)
            if due:
                checkpoint.save(out_dir, checkpoint.Checkpoint(done, trace.lengths(), task.state_dict(),
                                                               checkpoint.rng_state()))
            on_round(summary)

        _simulate(scenario, trace, replay or task, after_round)
        status = "complete"
    except KeyboardInterrupt as exc:
        status, ending = "interrupted", {"signal": str(exc) or "SIGINT"}
        raise
    except BaseException as exc:
        ending = {"error": one_line(exc)}
        raise
    finally:
        if replay is not None and replay.active:
            trace.discard()  # re-simulated rows are already on disk
        trace.flush(status=status, wall_time_s=time.perf_counter() - wall_start, **ending)
        trace.consolidate(keep_streams=status != "complete")
        if status == "complete":
            shutil.rmtree(Path(out_dir) / checkpoint.DIRECTORY, ignore_errors=True)
    return trace


def _resumable(out_dir: Path, scenario: Scenario) -> tuple[checkpoint.Checkpoint | None, list[str]]:
    """The checkpoint to resume `out_dir` from (None: from the start) and the damaged ones skipped, after checking
    that the run may be resumed."""
    try:
        manifest = read_manifest(out_dir)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{out_dir} is not a readable run directory ({one_line(exc)}); check the path") from None
    status = manifest["status"]
    if status == "complete":
        raise RunDirError(f"{out_dir} is complete; nothing to resume (--overwrite runs it again)")
    if status == "running":
        raise RunDirError(f"{out_dir} is still being written by process {manifest['pid']} on "
                          f"{manifest['hostname']}; wait for it or stop it first")
    if manifest.get("scenario_hash") != scenario_hash(scenario):
        raise RunDirError(f"{out_dir} was started with another scenario; resume it without a scenario argument "
                          "(or with the same file and --set overrides)")
    return checkpoint.load_latest(out_dir)


def _open_trace(scenario: Scenario, out_dir: Path, saved: checkpoint.Checkpoint | None,
                skipped: list[str] | None) -> TraceWriter:
    """The run's writer and first manifest; `skipped` is None for a new run, else the resumed run's damaged
    checkpoints, noted in the manifest with where it resumed from."""
    manifest: dict[str, Any] = {
        "scenario": scenario.model_dump(mode="json"),
        "scenario_input": scenario.model_dump(mode="json", exclude_unset=True),
        "scenario_hash": scenario_hash(scenario), "seed": scenario.seed, "versions": package_versions(),
        "status": "running", "rounds_completed": saved.next_round if saved else 0, **process_identity(),
    }
    if skipped is not None:  # keep what the earlier processes recorded
        previous = read_manifest(out_dir)
        for key in ("error", "signal", "wall_time_s"):
            previous.pop(key, None)
        manifest = {**previous, **manifest, "resumed_from_round": [*previous.get("resumed_from_round", []),
                                                                   saved.next_round if saved else 0],
                    "damaged_checkpoints": [*previous.get("damaged_checkpoints", []), *skipped]}
    trace = TraceWriter(out_dir, manifest, lengths=saved.lengths if saved else None)
    trace.write_manifest()
    return trace


def _simulate(scenario: Scenario, trace: TraceWriter, task: Task | _Replay,
              after_round: Callable[[RoundSummary], None]) -> None:
    sim = scenario.simulation
    window_s = (sim.start_s, sim.start_s + sim.rounds * sim.round_deadline_s)
    with open_mobility(scenario.mobility, default_cache_dir(), scenario.seed, trace.out_dir, window_s=window_s,
                       rsu=scenario.rsu) as mobility:
        rsus = place_rsus(scenario.rsu, mobility.bounds(), mobility.net_file)
        if mobility.net_file is not None:
            trace.manifest["net_file"] = str(Path(mobility.net_file).resolve())  # for the report's map
            trace.manifest["uncovered_lane_fraction"] = network_uncovered_fraction(rsus, mobility.net_file)
        trace.manifest["rsus"] = {"xy_m": rsus.xy_m.tolist(), "radius_m": rsus.radius_m.tolist()}
        env = simpy.Environment(initial_time=scenario.simulation.start_s)
        world = World(env, scenario, mobility, rsus, on_handovers=lambda events: trace.add(
            "handovers", [_handover_row(event) for event in events]))
        scheduler = make_scheduler(scenario.scheduler, stream(scenario.seed, "scheduler"))
        participants = 0

        def counted(summary: RoundSummary) -> None:
            nonlocal participants
            participants += summary.participants
            after_round(summary)

        orchestrator = HierarchicalFederation if scenario.federation.aggregation == "hierarchical" else FlatFederation
        federation = orchestrator(env, scenario, world, task, scheduler, trace, counted)  # type: ignore[arg-type]
        env.process(world.run())
        env.process(_sample_vehicles(env, world, trace, scenario.trace.vehicle_sample_s))
        env.run(until=env.process(federation.run()))
        if not participants:  # an empty run must not pass for a result (its "accuracy" is the untrained model's)
            raise no_participant_error(vehicles_seen=world.vehicles_seen, served_seen=world.served_seen,
                                       window_s=(sim.start_s, env.now))


class _Replay:
    """The task of a resumed run while it re-simulates the rounds before its checkpoint.

    Everything but learning is re-simulated exactly (it is deterministic from the seed and cheap); the learning of
    those rounds is not redone: its state comes from the checkpoint, and the training loss and accuracy the
    scheduler and the round rows need come from the stored trace. The rows the re-simulation produces are dropped
    (they are on disk); once its last round ends they are compared with the stored ones, so that a resume that
    would not continue the same run (other code, other inputs) fails instead of writing a chimera."""

    def __init__(self, task: Task, trace: TraceWriter, saved: checkpoint.Checkpoint) -> None:
        self.task = task
        self.rounds = saved.next_round
        stored = {name: read_stream(trace.stream_path(name), name) for name in SCHEMA}
        self.stored_rows = {name: table.num_rows for name, table in stored.items()}
        self.stored_rounds = stored["rounds"].to_pandas()
        self.outputs = stored["tasks"].to_pandas().groupby("round")[["accuracy", "loss"]]
        participants = stored["participants"].to_pandas()
        arrived = participants[participants["outcome"] == "arrived"]
        self.client_losses = arrived.groupby("round")["train_loss"]
        self.arrived_vehicles = arrived.groupby("round")["vehicle"]
        self.client_norms = stored["components"].to_pandas().groupby(["round", "vehicle"])[["a_norm", "b_norm"]]
        self.replayed_rows = dict.fromkeys(SCHEMA, 0)
        self.replayed_rounds: list[dict[str, Any]] = []
        self.round_index = -1
        self.active = True  # until the last re-simulated round has ended
        task.load_state_dict(saved.learning)
        checkpoint.set_rng_state(saved.torch_rng)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def train(self, clients: list[int], round_index: int, ranks: list[int], densities: list[float] | None = None,
              edges: list[int] | None = None) -> Any:
        """The stored per-client losses of a re-simulated round (what the scheduler learnt from), else training."""
        self.round_index = round_index
        if round_index < self.rounds:
            if not clients:
                return float("nan")
            return self.client_losses.get_group(round_index).to_numpy()
        return self.task.train(clients, round_index, ranks, densities, edges=edges)

    @property
    def update_norms(self) -> list[np.ndarray] | None:
        """The stored component norms of a re-simulated round's updates (what the scheduler learnt from)."""
        if self.round_index >= self.rounds or self.task.update_norms is None:
            return self.task.update_norms
        if self.round_index not in self.arrived_vehicles.groups:
            return []
        return [self.client_norms.get_group((self.round_index, vehicle)).to_numpy()
                for vehicle in self.arrived_vehicles.get_group(self.round_index)]

    def aggregate_edges(self) -> None:
        """A re-simulated global round leaves the learning state alone (it comes from the checkpoint)."""
        if self.round_index >= self.rounds:
            self.task.aggregate_edges()

    def evaluate_tasks(self) -> np.ndarray:
        if self.round_index < self.rounds:
            return self.outputs.get_group(self.round_index).to_numpy(dtype=float)
        return self.task.evaluate_tasks()

    def absorb(self, trace: TraceWriter, round_index: int) -> bool:
        """After round `round_index`: True if it was re-simulated (its rows are dropped here); after the last
        re-simulated round, checks the re-simulation against the stored trace."""
        if round_index >= self.rounds:
            return False
        dropped = trace.discard()
        for name, rows in dropped.items():
            self.replayed_rows[name] += len(rows)
        self.replayed_rounds.extend(dropped["rounds"])
        if round_index == self.rounds - 1:
            self.active = False
            if (self.replayed_rows != self.stored_rows
                    or not frame("rounds", self.replayed_rounds).equals(self.stored_rounds)):
                raise RunDirError(f"resuming {trace.out_dir} does not reproduce its first {self.rounds} rounds (the "
                                  f"code or an input file changed since it started: rows {self.replayed_rows} vs "
                                  f"stored {self.stored_rows}); start it again with --overwrite")
        return True


def _handover_row(event: HandoverEvent) -> dict[str, object]:
    kind = "attach" if event.from_rsu < 0 else "detach" if event.to_rsu < 0 else "handover"
    return {"time_s": event.time_s, "vehicle": event.vehicle, "from_rsu": event.from_rsu,
            "to_rsu": event.to_rsu, "kind": kind, "interruption_s": event.interruption_s}


def _sample_vehicles(env: simpy.Environment, world: World, trace: TraceWriter,
                     every_s: float) -> Generator[simpy.Event, object, None]:
    """Record every vehicle's position, serving RSU and battery, right after the first refresh of each period."""
    next_at = env.now
    while True:
        yield world.next_tick()
        if env.now < next_at:
            continue
        next_at = env.now + every_s
        snap = world.snapshot
        trace.add("vehicles", [
            {"time_s": env.now, "vehicle": vehicle, "x_m": x, "y_m": y, "speed_mps": speed, "rsu": rsu,
             "battery_j": battery}
            for vehicle, (x, y), speed, rsu, battery in zip(
                snap.ids.tolist(), snap.xy_m.tolist(), snap.speed_mps.tolist(), world.serving.tolist(),
                world.battery_j.tolist(), strict=True)
        ])
