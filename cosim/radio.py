"""Link rates and the transfer process that moves bits over a rate that changes at every mobility tick."""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import simpy

from cosim.bandwidth import required_bandwidth_hz, snr_bandwidth_hz
from cosim.channel import db_to_linear

NR_MAX_SPECTRAL_EFFICIENCY = 948 / 1024 * 8  # bit/s/Hz: TS 38.214 Table 5.1.3.1-2, MCS 27 (256QAM, R = 948/1024)
_LN2 = math.log(2.0)
ArrayLike = np.ndarray | float


def snr(bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: float) -> np.ndarray:
    """Received SNR p·g/(B·N0) of an FDMA share B; N0 already includes the receiver's noise figure."""
    return np.asarray(power_w) * np.asarray(gain) / (np.asarray(bandwidth_hz, dtype=float) * noise_psd_w_per_hz)


def shannon_rate_bps(bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: float,
                     snr_gap_db: float = 0.0, max_spectral_efficiency: float = math.inf) -> np.ndarray:
    """R = B·min(log2(1 + SNR/Γ), η_max): capacity of an FDMA share B, less an SNR gap Γ for practical coding,
    capped at the best modulation and coding scheme's spectral efficiency η_max (e.g. NR_MAX_SPECTRAL_EFFICIENCY).

    A zero share carries nothing (rather than 0·∞)."""
    bandwidth = np.asarray(bandwidth_hz, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        efficiency = np.log1p(snr(bandwidth, power_w, gain, noise_psd_w_per_hz) / db_to_linear(snr_gap_db)) / _LN2
        return np.where(bandwidth > 0, bandwidth * np.minimum(efficiency, max_spectral_efficiency), 0.0)


def bandwidth_for_rate_hz(rate_bps: ArrayLike, power_w: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: float,
                          snr_gap_db: float = 0.0, max_spectral_efficiency: float = math.inf) -> np.ndarray:
    """Smallest share B with shannon_rate_bps(B, ...) = R: the inverse that FDMA bandwidth allocation needs.

    The SNR gap Γ scales the noise (a = p·g/(Γ·N0)) in the Lambert-W closed form of cosim.bandwidth;
    R ≥ a/ln2 (the infinite-bandwidth capacity) is unreachable: ∞. The cap adds B ≥ R/η_max."""
    rate = np.asarray(rate_bps, dtype=float)
    a = snr_bandwidth_hz(power_w, gain, db_to_linear(snr_gap_db) * noise_psd_w_per_hz)
    return np.maximum(required_bandwidth_hz(rate, a), rate / max_spectral_efficiency)


def fdma_delay_s(bits: ArrayLike, bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike,
                 noise_psd_w_per_hz: float, snr_gap_db: float = 0.0,
                 max_spectral_efficiency: float = math.inf) -> np.ndarray:
    """Upload time of each device under a given FDMA allocation at a frozen channel (∞ without rate, 0 without bits)."""
    rate = shannon_rate_bps(bandwidth_hz, power_w, gain, noise_psd_w_per_hz, snr_gap_db, max_spectral_efficiency)
    bits = np.asarray(bits, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bits > 0, bits / rate, 0.0)


@dataclass(frozen=True)
class RateModel:
    """The simulator's one rate function: FDMA capacity less the SNR gap Γ, capped at η_max bit/s/Hz. Schedulers
    plan with it and every transfer runs at it, so a plan's delays are the radio's on an unchanged channel."""

    noise_psd_w_per_hz: float
    snr_gap_db: float = 0.0
    max_spectral_efficiency: float = math.inf

    def snr_bandwidth_hz(self, power_w: ArrayLike, gain: ArrayLike) -> np.ndarray:
        """a = p·g/(Γ·N0): the Lambert-W closed forms of cosim.bandwidth see the gap as extra noise."""
        return snr_bandwidth_hz(power_w, gain, db_to_linear(self.snr_gap_db) * self.noise_psd_w_per_hz)

    def rate_bps(self, bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike) -> np.ndarray:
        return shannon_rate_bps(bandwidth_hz, power_w, gain, self.noise_psd_w_per_hz, self.snr_gap_db,
                                self.max_spectral_efficiency)

    def bandwidth_for_rate_hz(self, rate_bps: ArrayLike, power_w: ArrayLike, gain: ArrayLike) -> np.ndarray:
        return bandwidth_for_rate_hz(rate_bps, power_w, gain, self.noise_psd_w_per_hz, self.snr_gap_db,
                                     self.max_spectral_efficiency)

    def delay_s(self, bits: ArrayLike, bandwidth_hz: ArrayLike, power_w: ArrayLike, gain: ArrayLike) -> np.ndarray:
        return fdma_delay_s(bits, bandwidth_hz, power_w, gain, self.noise_psd_w_per_hz, self.snr_gap_db,
                            self.max_spectral_efficiency)


def downlink_rate_bps(bandwidth_hz: ArrayLike, gain: ArrayLike, noise_psd_w_per_hz: float, rsu_power_w: float,
                      rsu_bandwidth_hz: float, snr_gap_db: float = 0.0,
                      max_spectral_efficiency: float = math.inf) -> np.ndarray:
    """RSU-to-vehicle rate of an FDMA share when the RSU spreads its power evenly over its band (p = P·B/B_RSU).

    For a broadcast of the global model, pass the whole band and the weakest receiver's gain."""
    power = rsu_power_w * np.asarray(bandwidth_hz, dtype=float) / rsu_bandwidth_hz
    return shannon_rate_bps(bandwidth_hz, power, gain, noise_psd_w_per_hz, snr_gap_db, max_spectral_efficiency)


class Link(Protocol):
    """A vehicle's view of its radio link, valid until the next mobility tick."""

    def rate_bps(self) -> float: ...

    def broken(self) -> str | None: ...  # why the link can no longer carry this transfer, or None

    def next_tick(self) -> simpy.Event: ...


@dataclass(frozen=True)
class TransferResult:
    outcome: str  # "arrived", a link failure ("handover", "coverage_lost", "left_network") or the limit's name
    start_s: float
    end_s: float
    bits_sent: float

    @property
    def ok(self) -> bool:
        return self.outcome == "arrived"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def transfer(env: simpy.Environment, bits: float, link: Link, time_limit_s: float,
             limit_reason: str = "deadline") -> Generator[simpy.Event, object, TransferResult]:
    """Move `bits` over `link`; the rate is constant between ticks, so the finish time is exact, not tick-rounded.

    Fails with the link's reason when it breaks at a tick, or with `limit_reason` when `time_limit_s` runs out."""
    start = env.now
    limit_at = start + time_limit_s
    remaining = float(bits)
    while True:
        reason = link.broken()
        if reason is not None:
            return TransferResult(reason, start, env.now, bits - remaining)
        rate = link.rate_bps()
        since = env.now
        finish_at = since + remaining / rate if rate > 0 else math.inf
        wake = env.timeout(min(finish_at, limit_at) - since)
        fired = yield wake | link.next_tick()
        remaining -= rate * (env.now - since)
        if wake in fired:
            if finish_at <= limit_at:
                return TransferResult("arrived", start, finish_at, float(bits))
            return TransferResult(limit_reason, start, limit_at, bits - remaining)
