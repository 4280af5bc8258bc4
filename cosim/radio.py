"""Link rates and the transfer process that moves bits over a rate that changes at every mobility tick."""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import simpy


def shannon_rate_bps(bandwidth_hz: np.ndarray | float, power_w: np.ndarray | float, gain: np.ndarray | float,
                     noise_psd_w_per_hz: float) -> np.ndarray:
    """R = B·log2(1 + p·g / (B·N0)): capacity of an FDMA share B of the band."""
    bandwidth = np.asarray(bandwidth_hz, dtype=float)
    snr = np.asarray(power_w) * np.asarray(gain) / (bandwidth * noise_psd_w_per_hz)
    return bandwidth * np.log1p(snr) / math.log(2)


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
