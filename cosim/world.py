"""The radio world between two mobility ticks: positions, serving RSUs, channel gains and batteries."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import simpy

from cosim.align import realign
from cosim.channel import (
    CorrelatedFading,
    LargeScaleChannel,
    SimplePathloss,
    db_to_linear,
    noise_psd_w_per_hz,
    rayleigh_power,
    rician_power,
)
from cosim.energy import Batteries
from cosim.radio import RateModel
from cosim.rng import stream
from cosim.scenario import ChannelConfig, Scenario
from mobility.association import Association, HandoverEvent
from mobility.rsu import RsuLayout, dwell_time_s
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
        ch = self.channel = scenario.channel
        self.noise_psd = noise_psd_w_per_hz(ch.noise_psd_dbm_per_hz, ch.noise_figure_db)
        self.rate = RateModel(self.noise_psd, ch.snr_gap_db, ch.max_spectral_efficiency)  # planners' and transfers'
        self.rsu_tx_power_w = scenario.rsu.tx_power_w
        self.device = scenario.energy.device()
        self.association = Association(hysteresis_db=scenario.rsu.hysteresis_db,
                                       time_to_trigger_s=scenario.rsu.time_to_trigger_s,
                                       interruption_s=scenario.rsu.handover_interruption_s,
                                       filter_k=scenario.rsu.l3_filter_k)
        self.large_scale = LargeScaleChannel(_pathloss_model(ch), ch.carrier_hz, stream(scenario.seed, "shadowing"))
        self.fading = _FastFading(ch, rsus.count, stream(scenario.seed, "fading"))
        self.on_handovers = on_handovers
        self.snapshot = Snapshot.empty(env.now)
        self.serving = np.zeros(0, dtype=np.int64)
        self.distance_m = np.zeros(0)
        self.dwell_s = np.zeros(0)
        self.gain = np.zeros(0)
        self._path_gain = np.zeros(0)  # serving link without fast fading
        self.slot = np.zeros(0, dtype=np.int64)
        self.batteries = Batteries()
        self._served_ever = np.zeros(0, dtype=bool)  # by slot: ever served by an RSU
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

    def begin_round(self) -> None:
        """Called as a round starts: round-block fading takes its new draw here (the other kinds change per tick)."""
        if self.fading.new_round(self.ids):
            self.gain = self._path_gain * self.fading.serving_links(self.snapshot, self.serving,
                                                                    self.association.candidates())

    def refresh(self) -> None:
        snap = self.mobility.advance(self.env.now, next_s=self.env.now + self.tick_s)
        links = self.rsus.links(snap.xy_m)
        loss_db, _ = self.large_scale.update(snap.ids, snap.xy_m, links, self.rsus.height_m,
                                             self.channel.vehicle_height_m)
        rsrp_dbm = 10 * np.log10(self.rsu_tx_power_w * 1e3) - loss_db
        serving, events = self.association.update(snap.time_s, snap.ids, links, rsrp_dbm)
        # The serving link of each vehicle; -1 (unserved) picks the appended entry: no gain, no distance.
        at = links.find(np.arange(len(snap.ids)), serving)
        self._path_gain = db_to_linear(-np.append(loss_db, np.inf)[at])
        self.gain = self._path_gain * self.fading.serving_links(snap, serving, self.association.candidates())
        self.distance_m = np.append(links.distance_2d_m, np.nan)[at]
        self.dwell_s = dwell_time_s(self.rsus, serving, snap.xy_m, snap.speed_mps, snap.heading_rad)
        self.serving = serving
        self._assign_slots(snap.ids)
        served = np.zeros(len(self.batteries), dtype=bool)
        served[:len(self._served_ever)] = self._served_ever
        served[self.slot[serving >= 0]] = True
        self._served_ever = served
        self.snapshot = snap
        if events:
            self.on_handovers(events)

    def _assign_slots(self, ids: np.ndarray) -> None:
        known, slot = realign(self.snapshot.ids, self.slot, ids)
        newcomers = np.flatnonzero(~known)
        slot[newcomers] = self.batteries.add(self.device.battery_j, len(newcomers))
        self.slot = slot

    @property
    def vehicles_seen(self) -> int:
        """Distinct vehicles in the network at any tick so far."""
        return len(self.batteries)

    @property
    def served_seen(self) -> int:
        """Distinct vehicles served by an RSU at any tick so far (with vehicles_seen: why a run had no participant,
        see mobility.checks.no_participant_error)."""
        return int(self._served_ever.sum())

    def can_transmit(self) -> np.ndarray:
        """(n,) served, not inside a handover interruption, battery not empty: who a scheduler may pick."""
        interrupted = self.association.interrupted(self.env.now)
        return (self.serving >= 0) & ~interrupted & (self.battery_j > 0)

    @property
    def battery_j(self) -> np.ndarray:
        """Energy left per current vehicle, aligned with `ids`."""
        return self.batteries.level_j[self.slot]

    def row(self, vehicle: str) -> int | None:
        """Index of `vehicle` in the current arrays, or None once it has left the network."""
        i = int(np.searchsorted(self.ids, vehicle))
        return i if i < len(self.ids) and self.ids[i] == vehicle else None

    def rate_bps(self, bandwidth_hz: float, power_w: float, gain: float) -> float:
        return float(self.rate.rate_bps(bandwidth_hz, power_w, gain))

    def link(self, vehicle: str, rsu: int, bandwidth_hz: float, power_w: float) -> VehicleLink:
        return VehicleLink(self, vehicle, rsu, bandwidth_hz, power_w)


def _pathloss_model(ch: ChannelConfig) -> SimplePathloss | str:
    if ch.pathloss == "simple":
        return SimplePathloss(ch.reference_loss_db, ch.reference_distance_m, ch.exponent, ch.shadowing_std_db,
                              ch.shadowing_decorrelation_m)
    return ch.pathloss


class _FastFading:
    """Small-scale power gain of each vehicle's serving link: none, block (i.i.d. per tick), Jakes-correlated, or
    round (i.i.d. per vehicle and round, constant through the round: the seeds' quasi-static block fading, under
    which a round's planned delays are exactly its realised ones when nothing moves). Jakes fading is kept for the
    serving link and the handover candidate only, so the target's fading continues through a handover."""

    def __init__(self, ch: ChannelConfig, num_rsus: int, rng: np.random.Generator) -> None:
        self.kind = ch.fading
        self.k_factor = float(db_to_linear(ch.rician_k_db)) if ch.fading == "rician" else 0.0
        self.rng = rng
        self.correlated = (CorrelatedFading(num_rsus, ch.carrier_hz, rng, ch.fading_sinusoids, self.k_factor)
                           if ch.fading_correlation == "jakes" and ch.fading != "none" else None)
        self.per_round = ch.fading_correlation == "round" and ch.fading != "none"
        self._held_ids, self._held = np.array([], dtype=str), np.zeros(0)  # round mode: this round's draws

    def serving_links(self, snap: Snapshot, serving: np.ndarray, candidate: np.ndarray) -> np.ndarray | float:
        """(n,) power gain of each vehicle's serving link (unserved vehicles get a value that is never used)."""
        if self.kind == "none":
            return 1.0
        if self.correlated is not None:  # advanced every tick: its Doppler phase integrates speed
            links = np.column_stack([serving, np.where(candidate != serving, candidate, -1)])
            return self.correlated.update(snap.ids, snap.speed_mps, snap.time_s, links)[:, 0]
        if not self.per_round:
            return self._draw(len(serving))
        known, held = realign(self._held_ids, self._held, snap.ids)
        fresh = np.flatnonzero(~known)
        held[fresh] = self._draw(len(fresh))  # a vehicle that appears mid-round gets its own block
        self._held_ids, self._held = snap.ids, held
        return held

    def new_round(self, ids: np.ndarray) -> bool:
        """Round mode: a fresh draw for every vehicle; returns whether anything was redrawn."""
        if self.per_round:
            self._held_ids, self._held = ids, self._draw(len(ids))
        return self.per_round

    def _draw(self, count: int) -> np.ndarray:
        if self.kind == "rician":
            return rician_power(count, self.k_factor, self.rng)
        return rayleigh_power(count, self.rng)


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
        return self.world.rate_bps(self.bandwidth_hz, self.power_w, self.world.gain[row] if row is not None else 0.0)

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
