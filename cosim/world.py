"""The radio world between two mobility ticks: positions, serving RSUs, channel gains and batteries."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import simpy

from cosim.align import realign
from cosim.channel import Shadowing, db_to_linear, noise_psd_w_per_hz, rayleigh_power, simple_pathloss_db
from cosim.radio import shannon_rate_bps
from cosim.rng import stream
from cosim.scenario import Scenario
from mobility.association import Association, HandoverEvent
from mobility.rsu import RsuLayout
from mobility.snapshot import Mobility, Snapshot


class World:
    """Refreshed by one SimPy process every mobility tick; everything else reads it, nothing else writes it.

    Per-vehicle arrays are aligned with the snapshot's sorted ids. Each vehicle also gets a permanent slot
    (order of first appearance) that indexes its battery and picks its data shard."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, mobility: Mobility, rsus: RsuLayout,
                 on_handovers: Callable[[list[HandoverEvent]], None]) -> None:
        self.env = env
        self.mobility = mobility
        self.rsus = rsus
        self.tick_s = scenario.simulation.mobility_tick_s
        self.channel = scenario.channel
        self.noise_psd = noise_psd_w_per_hz(scenario.channel.noise_psd_dbm_per_hz, scenario.channel.noise_figure_db)
        self.rsu_tx_power_w = scenario.rsu.tx_power_w
        self.initial_battery_j = scenario.energy.battery_j
        self.association = Association(hysteresis_db=scenario.rsu.hysteresis_db,
                                       time_to_trigger_s=scenario.rsu.time_to_trigger_s)
        self.shadowing = Shadowing(scenario.channel.shadowing_std_db, scenario.channel.shadowing_decorrelation_m,
                                   rsus.count, stream(scenario.seed, "shadowing"))
        self.fading_rng = stream(scenario.seed, "fading")
        self.on_handovers = on_handovers
        self.snapshot = Snapshot.empty(env.now)
        self.serving = np.zeros(0, dtype=np.int64)
        self.distance_m = np.zeros(0)
        self.gain = np.zeros(0)
        self.slot = np.zeros(0, dtype=np.int64)
        self.battery_j = np.zeros(0)
        self._tick_event = env.event()

    @property
    def ids(self) -> np.ndarray:
        return self.snapshot.ids

    def run(self) -> Generator[simpy.Event, object, None]:
        """SimPy process: advance mobility, re-associate, redraw the channel, wake every waiting transfer."""
        while True:
            self.refresh()
            done, self._tick_event = self._tick_event, self.env.event()
            done.succeed()
            yield self.env.timeout(self.tick_s)

    def next_tick(self) -> simpy.Event:
        return self._tick_event

    def refresh(self) -> None:
        snap = self.mobility.advance(self.env.now)
        distance_2d = self.rsus.distances_m(snap.xy_m)
        height = self.rsus.height_m[None, :] - self.channel.vehicle_height_m
        distance = np.hypot(distance_2d, height)
        ch = self.channel
        large_scale_db = -simple_pathloss_db(distance, ch.reference_loss_db, ch.reference_distance_m, ch.exponent)
        large_scale_db += self.shadowing.update(snap.ids, snap.xy_m)
        rsrp_dbm = 10 * np.log10(self.rsu_tx_power_w * 1e3) + large_scale_db
        in_coverage = distance_2d <= self.rsus.radius_m[None, :]
        serving, events = self.association.update(snap.time_s, snap.ids, rsrp_dbm, in_coverage)
        rows = np.arange(len(snap.ids))
        column = np.maximum(serving, 0)
        fading = rayleigh_power(len(snap.ids), self.fading_rng) if ch.fading == "rayleigh" else 1.0
        self.gain = np.where(serving >= 0, db_to_linear(large_scale_db[rows, column]) * fading, 0.0)
        self.distance_m = np.where(serving >= 0, distance_2d[rows, column], np.nan)
        self.serving = serving
        self._assign_slots(snap.ids)
        self.snapshot = snap
        if events:
            self.on_handovers(events)

    def _assign_slots(self, ids: np.ndarray) -> None:
        known, slot = realign(self.snapshot.ids, self.slot, ids)
        newcomers = np.flatnonzero(~known)
        slot[newcomers] = len(self.battery_j) + np.arange(len(newcomers))
        self.battery_j = np.concatenate([self.battery_j, np.full(len(newcomers), self.initial_battery_j)])
        self.slot = slot

    def row(self, vehicle: str) -> int | None:
        """Index of `vehicle` in the current arrays, or None once it has left the network."""
        i = int(np.searchsorted(self.ids, vehicle))
        return i if i < len(self.ids) and self.ids[i] == vehicle else None

    def link(self, vehicle: str, rsu: int, bandwidth_hz: float, power_w: float) -> VehicleLink:
        return VehicleLink(self, vehicle, rsu, bandwidth_hz, power_w)

    def drain(self, slot: int, energy_j: float) -> None:
        self.battery_j[slot] = max(self.battery_j[slot] - energy_j, 0.0)


@dataclass(frozen=True)
class VehicleLink:
    """One vehicle's FDMA share at one RSU; breaks when the vehicle is served elsewhere or leaves."""

    world: World
    vehicle: str
    rsu: int
    bandwidth_hz: float
    power_w: float

    def rate_bps(self) -> float:
        row = self.world.row(self.vehicle)
        gain = self.world.gain[row] if row is not None else 0.0
        return float(shannon_rate_bps(self.bandwidth_hz, self.power_w, gain, self.world.noise_psd))

    def broken(self) -> str | None:
        row = self.world.row(self.vehicle)
        if row is None:
            return "left_network"
        serving = self.world.serving[row]
        if serving == self.rsu:
            return None
        return "coverage_lost" if serving < 0 else "handover"

    def next_tick(self) -> simpy.Event:
        return self.world.next_tick()
