"""One scheduled vehicle's round on the SimPy clock: its task's phases in order against the round deadline, with
the energy every step costs, as one trace record."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from cosim.federation.task import Phase, Task
from cosim.radio import Link, TransferResult, transfer
from cosim.schedulers import Observation, Plan
from cosim.world import World
from mobility.config import RsuConfig

_COLUMN = {"down": "download", "up": "upload", "compute": "compute"}


class Participant:
    """Runs participant j of a plan. The first failure ends the round for it; the energy spent until then is spent
    regardless. `record["scheduled_air_time_s"]` is the realised time of the transfers its plan covered (its uploads,
    and its downloads when the RSU answers at the vehicle's rate; see cosim.payload)."""

    def __init__(self, env: simpy.Environment, world: World, task: Task, rsu_config: RsuConfig) -> None:
        self.env, self.world, self.task, self.rsu_config = env, world, task, rsu_config
        self.device = world.device

    def run(self, obs: Observation, plan: Plan, j: int, slot: int,
            deadline_at: float) -> Generator[simpy.Event, object, dict[str, Any]]:
        env, world = self.env, self.world
        i = int(plan.participants[j])
        vehicle, rsu, bandwidth = str(obs.vehicles[i]), int(obs.rsu[i]), float(plan.bandwidth_hz[j])
        rank = int(obs.payload.default_rank if plan.rank is None else plan.rank[j])
        density = obs.payload.default_density if plan.density is None else float(plan.density[j])
        phases = self.task.phases(rank, density)
        power = float(obs.tx_power_w[i])
        # Downlink on the same FDMA share (see RsuConfig.downlink for its power).
        down_power = power if obs.payload.reciprocal_downlink else (
            self.rsu_config.tx_power_w * bandwidth / float(obs.rsu_bandwidth_hz[rsu]))
        links = {"up": world.link(vehicle, rsu, bandwidth, power),
                 "down": world.link(vehicle, rsu, bandwidth, down_power)}
        client = int(self.task.client_of(np.array(slot)))
        record: dict[str, Any] = {
            "round": obs.round_index, "vehicle": vehicle, "client": client,
            "task": self.task.names[int(self.task.task_of(np.array(client)))],
            "rsu": rsu, "distance_m": float(obs.distance_m[i]), "gain_db": float(10 * np.log10(obs.gain[i])),
            "rate_bps": float(obs.rate.rate_bps(bandwidth, power, float(obs.gain[i]))), "bandwidth_hz": bandwidth,
            "rank": rank, "density": density,
            "download_bits": sum(p.bits for p in phases if p.kind == "down"),
            "upload_bits": sum(p.bits for p in phases if p.kind == "up"),
            "download_s": 0.0, "compute_time_s": 0.0, "upload_delay_s": 0.0,
            "compute_energy_j": 0.0, "transmit_energy_j": 0.0,
        }
        record.update(dict.fromkeys(("download_start_s", "download_end_s", "compute_start_s", "compute_end_s",
                                     "upload_start_s", "upload_end_s"), float("nan")))
        outcome = "arrived"
        for phase in phases:
            column = _COLUMN[phase.kind]
            if math.isnan(record[f"{column}_start_s"]):
                record[f"{column}_start_s"] = env.now
            outcome = yield from self._step(phase, links, power, slot, deadline_at, record)
            record[f"{column}_end_s"] = env.now
            if outcome != "arrived":
                break
        busy_s = record["compute_time_s"] + record["upload_delay_s"]
        idle = world.batteries.drain(slot, self.device.idle_power_w * (env.now - obs.time_s - busy_s))
        record["idle_energy_j"] = float(idle[0])
        record["energy_j"] = record["compute_energy_j"] + record["transmit_energy_j"] + record["idle_energy_j"]
        record["battery_j"] = float(world.batteries.level_j[slot])
        record["scheduled_air_time_s"] = record["upload_delay_s"] + (
            record["download_s"] if obs.payload.reciprocal_downlink else 0.0)
        record["outcome"] = outcome
        return record

    def _step(self, phase: Phase, links: dict[str, Link], power_w: float, slot: int, deadline_at: float,
              record: dict[str, Any]) -> Generator[simpy.Event, object, str]:
        if phase.kind == "compute":
            return (yield from self._compute(phase.samples, slot, deadline_at, record))
        return (yield from self._transfer(phase.bits, links[phase.kind], power_w if phase.kind == "up" else 0.0,
                                          slot, deadline_at, record, _COLUMN[phase.kind]))

    def _compute(self, samples: float, slot: int, deadline_at: float,
                 record: dict[str, Any]) -> Generator[simpy.Event, object, str]:
        """Local computation: stops at the deadline or when the battery is empty, whichever comes first."""
        needed_s = float(self.device.compute_time_s(samples))
        draw_w = self.device.compute_power_w
        battery = float(self.world.batteries.level_j[slot])
        busy = min(needed_s, deadline_at - self.env.now, battery / draw_w)
        spent = battery if busy == battery / draw_w else busy * draw_w  # empty means exactly empty
        yield self.env.timeout(busy)
        self.world.batteries.drain(slot, spent)
        record["compute_time_s"] += busy
        record["compute_energy_j"] += spent
        if busy < needed_s:
            return "deadline" if self.env.now >= deadline_at else "battery"
        return "arrived"

    def _transfer(self, bits: int, link: Link, power_w: float, slot: int, deadline_at: float, record: dict[str, Any],
                  column: str) -> Generator[simpy.Event, object, str]:
        """A transfer that must finish by the deadline; an upload also stops when the battery runs out."""
        limit, reason = deadline_at - self.env.now, "deadline"
        battery = float(self.world.batteries.level_j[slot])
        if power_w > 0 and battery / power_w < limit:
            limit, reason = battery / power_w, "battery"
        result: TransferResult = yield from transfer(self.env, bits, link, limit, reason)
        spent = battery if result.outcome == "battery" else power_w * result.duration_s
        self.world.batteries.drain(slot, spent)
        record["transmit_energy_j"] += spent
        record["download_s" if column == "download" else "upload_delay_s"] += result.duration_s
        return result.outcome
