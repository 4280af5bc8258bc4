"""Rates, FDMA allocations (min-max delay against scipy), downlink, and the exact-time transfer process."""

import math

import numpy as np
import pytest
import simpy
from scipy.optimize import brentq

from cosim.bandwidth import equal_finish_split, snr_bandwidth_hz
from cosim.radio import (
    NR_MAX_SPECTRAL_EFFICIENCY,
    RateModel,
    bandwidth_for_rate_hz,
    downlink_rate_bps,
    fdma_delay_s,
    shannon_rate_bps,
    snr,
    transfer,
)

N0 = 4e-21 * 10 ** 0.9  # -174 dBm/Hz plus a 9 dB noise figure, W/Hz


def test_shannon_rate():
    # B log2(1 + p g / (B N0)) at SNR = 1 gives exactly B bit/s
    assert shannon_rate_bps(1e6, 1.0, 1e-14, 1e-20) == pytest.approx(1e6)
    rates = shannon_rate_bps(np.array([1e6, 2e6]), 0.2, 1e-12, 4e-21)
    assert rates[1] > rates[0]


def test_snr_gap_cap_and_empty_share():
    assert float(snr(1e6, 1.0, 1e-14, 1e-20)) == pytest.approx(1.0)
    # a 3.0103 dB gap halves the SNR: SNR 2 → log2(1 + 1) = 1 bit/s/Hz
    assert shannon_rate_bps(1e6, 2.0, 1e-14, 1e-20, snr_gap_db=10 * math.log10(2)) == pytest.approx(1e6)
    # at SNR 2^20 − 1 Shannon gives 20 bit/s/Hz; the NR cap (TS 38.214 Table 5.1.3.1-2) gives 7.4063
    assert shannon_rate_bps(1e6, 2**20 - 1, 1e-14, 1e-20, max_spectral_efficiency=NR_MAX_SPECTRAL_EFFICIENCY) == (
        pytest.approx(1e6 * 7.40625))
    np.testing.assert_array_equal(shannon_rate_bps(np.array([0.0, 1e6]), 1.0, 1e-14, 1e-20), [0.0, 1e6])


@pytest.mark.parametrize(("gap_db", "cap"), [(0.0, math.inf), (3.0, 4.0)])
def test_bandwidth_for_rate_inverts_the_rate(gap_db, cap):
    rng = np.random.default_rng(0)
    power, gain = rng.uniform(0.1, 0.5, 200), 10 ** rng.uniform(-13, -9, 200)
    limit = power * gain / (10 ** (gap_db / 10) * N0 * math.log(2))  # rate at infinite bandwidth
    rate = limit * np.concatenate([rng.uniform(1e-4, 0.99, 195), [0.985, 0.995, 1 - 1e-4, 1 - 1e-7, 1e-9]])
    bandwidth = bandwidth_for_rate_hz(rate, power, gain, N0, gap_db, cap)
    np.testing.assert_allclose(shannon_rate_bps(bandwidth, power, gain, N0, gap_db, cap), rate, rtol=1e-11)
    assert np.all(np.isinf(bandwidth_for_rate_hz(limit * 1.01, power, gain, N0, gap_db, cap)))
    assert float(bandwidth_for_rate_hz(0.0, 0.2, 1e-10, N0)) == 0.0


def scipy_min_max_delay(bits, power, gain, noise_psd, total, gap_db=0.0, cap=math.inf):
    """Reference: brentq on each device's bandwidth for a delay, then brentq on the common delay."""

    def bandwidth_for(delay, i):
        need = bits[i] / delay
        f = lambda b: float(shannon_rate_bps(b, power[i], gain[i], noise_psd, gap_db, cap)) / need - 1.0  # noqa: E731
        hi = 1.0
        while f(hi) < 0:
            hi *= 2.0
        return brentq(f, 0.0, hi, xtol=1e-300, rtol=1e-15, maxiter=500)

    def excess(delay):
        return sum(bandwidth_for(delay, i) for i in range(len(bits))) / total - 1.0

    floor = max(bits * math.log(2) * 10 ** (gap_db / 10) * noise_psd / (power * gain))
    lo, hi = floor * (1 + 1e-9), floor * 2.0
    while excess(hi) > 0:
        hi *= 2.0
    while excess(lo) < 0:
        lo = floor + (lo - floor) / 10
    delay = brentq(excess, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)
    return np.array([bandwidth_for(delay, i) for i in range(len(bits))]), delay


@pytest.mark.parametrize(("seed", "gap_db", "cap"), [(1, 0.0, math.inf), (2, 0.0, math.inf), (3, 0.0, math.inf),
                                                      (4, 2.0, 6.0), (5, 0.0, NR_MAX_SPECTRAL_EFFICIENCY),
                                                      (6, 3.0, 0.5)])
def test_equal_finish_split_with_gap_and_cap_matches_scipy(seed, gap_db, cap):
    """The schedulers' bandwidth solver, fed the rate model's a = p·g/(Γ·N0) and cap, against a generic root finder."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    bits = rng.uniform(1e5, 5e6, k)
    power, gain = rng.uniform(0.05, 0.5, k), 10 ** rng.uniform(-13, -8, k)
    total = float(rng.uniform(1e6, 40e6))
    rate = RateModel(N0, gap_db, cap)
    (delay,), bandwidth = equal_finish_split(bits, rate.snr_bandwidth_hz(power, gain), np.zeros(k, dtype=int),
                                             np.array([total]), cap)
    ref_bandwidth, ref_delay = scipy_min_max_delay(bits, power, gain, N0, total, gap_db, cap)
    assert delay == pytest.approx(ref_delay, rel=1e-9)
    np.testing.assert_allclose(bandwidth, ref_bandwidth, rtol=1e-9)
    assert bandwidth.sum() == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(rate.delay_s(bits, bandwidth, power, gain), delay, rtol=1e-9)
    np.testing.assert_allclose(fdma_delay_s(bits, bandwidth, power, gain, N0, gap_db, cap), delay, rtol=1e-9)


def test_equal_finish_split_beats_equal_share():
    bits = np.array([1e6, 4e6])
    power, gain = np.array([0.2, 0.2]), np.array([1e-10, 1e-11])
    (delay,), _ = equal_finish_split(bits, snr_bandwidth_hz(power, gain, N0), np.zeros(2, dtype=int), np.array([10e6]))
    assert delay < fdma_delay_s(bits, np.array([5e6, 5e6]), power, gain, N0).max()


def test_fdma_delay_for_a_given_allocation():
    # SNR 1 on 1 MHz: 1 Mbit/s, so 2 Mbit take 2 s; no bandwidth: never; no bits: at once
    got = fdma_delay_s(np.array([2e6, 1.0, 0.0]), np.array([1e6, 0.0, 1e6]), 1.0, 1e-14, 1e-20)
    np.testing.assert_allclose(got, [2.0, math.inf, 0.0])


def test_downlink_spreads_rsu_power_over_the_band():
    # a 1/4 share gets 1/4 of the power: the SNR is that of the whole band, P g / (B_RSU N0)
    rate = downlink_rate_bps(5e6, 1e-12, 1e-20, rsu_power_w=20.0, rsu_bandwidth_hz=20e6)
    assert rate == pytest.approx(5e6 * math.log2(1 + 20.0 * 1e-12 / (20e6 * 1e-20)))


class StepLink:
    """A link whose rate changes at every tick, following a schedule, and which may break at a given tick."""

    def __init__(self, env, rates, break_at=None, reason="handover"):
        self.env, self.rates, self.break_at, self.reason = env, rates, break_at, reason
        self.tick = env.event()
        env.process(self._ticks())

    def _ticks(self):
        while True:
            yield self.env.timeout(1.0)
            done, self.tick = self.tick, self.env.event()
            done.succeed()

    def rate_bps(self):
        return self.rates[min(int(self.env.now), len(self.rates) - 1)]

    def broken(self):
        return self.reason if self.break_at is not None and self.env.now >= self.break_at else None

    def next_tick(self):
        return self.tick


def run_transfer(bits, rates, limit, **link_kwargs):
    env = simpy.Environment()
    link = StepLink(env, rates, **link_kwargs)
    process = env.process(transfer(env, bits, link, limit))
    env.run(until=process)
    return process.value


def test_transfer_across_rate_changes_finishes_at_the_analytic_time():
    # 1000 bit/s for 1 s, then 400 bit/s, then 250 bit/s: 1000 + 400 + 0.4·250 = 1500 bits at t = 2.4 s
    result = run_transfer(1500, [1000.0, 400.0, 250.0], limit=10.0)
    assert result.ok and result.end_s == pytest.approx(2.4, abs=1e-12)
    assert result.bits_sent == 1500


def test_transfer_misses_deadline_with_partial_bits():
    result = run_transfer(5000, [1000.0], limit=2.5)
    assert result.outcome == "deadline" and result.end_s == 2.5
    assert result.bits_sent == pytest.approx(2500)


def test_transfer_fails_when_the_link_breaks():
    result = run_transfer(5000, [1000.0], limit=10.0, break_at=2.0)
    assert result.outcome == "handover" and result.end_s == 2.0
    assert result.bits_sent == pytest.approx(2000)


def test_transfer_survives_a_zero_rate_tick():
    result = run_transfer(1500, [1000.0, 0.0, 1000.0], limit=10.0)
    assert result.ok and result.end_s == pytest.approx(2.5)
