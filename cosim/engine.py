"""Wires a scenario's components into SimPy processes on one clock and runs it to a trace directory."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from pathlib import Path

import simpy
import torch

from cosim.federation import FlatFederation, RoundSummary, make_task
from cosim.rng import stream
from cosim.scenario import Scenario
from cosim.schedulers import make_scheduler
from cosim.trace import TraceWriter, package_versions
from cosim.world import World
from mobility.association import HandoverEvent
from mobility.config import open_mobility, place_rsus
from mobility.netgen import default_cache_dir
from mobility.rsu import network_uncovered_fraction


def run_scenario(scenario: Scenario, out_dir: Path,
                 on_round: Callable[[RoundSummary], None] = lambda summary: None) -> TraceWriter:
    """Run every round of `scenario`; traces are flushed after each round, so an interrupted run stays readable."""
    torch.manual_seed(scenario.seed)
    wall_start = time.perf_counter()
    trace = TraceWriter(out_dir, {"scenario": scenario.model_dump(mode="json"), "seed": scenario.seed,
                                  "versions": package_versions(), "status": "running"})
    task = make_task(scenario.learning, scenario.seed)
    trace.flush(upload_bits=task.upload_bits, download_bits=task.download_bits, payload_bits=task.payload_bits,
                majority_rate=task.majority_rate)
    status = "interrupted"
    try:
        with open_mobility(scenario.mobility, default_cache_dir(), scenario.seed) as mobility:
            rsus = place_rsus(scenario.rsu, mobility.bounds(), mobility.net_file)
            if mobility.net_file is not None:
                trace.manifest["net_file"] = str(Path(mobility.net_file).resolve())  # for the report's map
                trace.manifest["uncovered_lane_fraction"] = network_uncovered_fraction(rsus, mobility.net_file)
            trace.manifest["rsus"] = {"xy_m": rsus.xy_m.tolist(), "radius_m": rsus.radius_m.tolist()}
            env = simpy.Environment(initial_time=scenario.simulation.start_s)
            world = World(env, scenario, mobility, rsus, on_handovers=lambda events: trace.add(
                "handovers", [_handover_row(event) for event in events]))
            scheduler = make_scheduler(scenario.scheduler, stream(scenario.seed, "scheduler"))

            def after_round(summary: RoundSummary) -> None:
                trace.flush()
                on_round(summary)

            federation = FlatFederation(env, scenario, world, task, scheduler, trace, after_round)
            env.process(world.run())
            env.process(_sample_vehicles(env, world, trace, scenario.trace.vehicle_sample_s))
            env.run(until=env.process(federation.run()))
        status = "complete"
    finally:
        trace.flush(status=status, wall_time_s=time.perf_counter() - wall_start)
    return trace


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
