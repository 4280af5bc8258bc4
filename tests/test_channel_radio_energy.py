import math

import numpy as np
import pytest
import simpy

from cosim.channel import Shadowing, noise_psd_w_per_hz, rayleigh_power, simple_pathloss_db
from cosim.energy import compute_energy_j, compute_time_s, transmit_energy_j
from cosim.radio import shannon_rate_bps, transfer


def test_simple_pathloss_matches_power_law():
    # PL0·(d/d0)^-α as a gain; in dB: PL0_dB + 10·α·log10(d/d0)
    d = np.array([1.0, 10.0, 100.0, 250.0])
    got = simple_pathloss_db(d, reference_loss_db=38.0, reference_distance_m=1.0, exponent=3.5)
    expected = -10 * np.log10(10 ** (-38.0 / 10) * (d / 1.0) ** -3.5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert simple_pathloss_db(np.array([0.1]), 38.0, 1.0, 3.5)[0] == 38.0  # clamped below d0


def test_noise_psd():
    # -174 dBm/Hz is kT at 290 K ≈ 3.98e-21 W/Hz
    assert noise_psd_w_per_hz(-174.0, 0.0) == pytest.approx(3.981e-21, rel=1e-3)
    assert noise_psd_w_per_hz(-174.0, 10.0) == pytest.approx(3.981e-20, rel=1e-3)


def test_rayleigh_power_has_unit_mean_and_exponential_tail():
    g = rayleigh_power(200_000, np.random.default_rng(0))
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(g > 1.0) == pytest.approx(math.exp(-1), abs=0.01)


def test_shadowing_correlation_at_decorrelation_distance_is_1_over_e():
    sigma, d_corr, n = 6.0, 20.0, 20_000
    shadowing = Shadowing(sigma, d_corr, num_rsus=1, rng=np.random.default_rng(1))
    ids = np.array([f"v{i:05d}" for i in range(n)])
    first = shadowing.update(ids, np.zeros((n, 2)))[:, 0].copy()
    second = shadowing.update(ids, np.column_stack([np.full(n, d_corr), np.zeros(n)]))[:, 0]
    assert first.std() == pytest.approx(sigma, rel=0.03)
    assert second.std() == pytest.approx(sigma, rel=0.03)
    assert np.corrcoef(first, second)[0, 1] == pytest.approx(math.exp(-1), abs=0.03)


def test_shadowing_newcomers_are_independent_of_leavers():
    shadowing = Shadowing(4.0, 10.0, num_rsus=2, rng=np.random.default_rng(2))
    a = shadowing.update(np.array(["a", "b"]), np.zeros((2, 2))).copy()
    b = shadowing.update(np.array(["b", "c"]), np.zeros((2, 2)))
    np.testing.assert_array_equal(b[0], a[1])  # b did not move: its shadowing is unchanged


def test_shannon_rate():
    # B log2(1 + p g / (B N0)) at SNR = 1 gives exactly B bit/s
    assert shannon_rate_bps(1e6, 1.0, 1e-14, 1e-20) == pytest.approx(1e6)
    rates = shannon_rate_bps(np.array([1e6, 2e6]), 0.2, 1e-12, 4e-21)
    assert rates[1] > rates[0]


def test_energy_formulas():
    assert compute_time_s(1e8, 32, 2e9) == pytest.approx(1.6)
    assert compute_energy_j(1e8, 32, 2e9, 1e-28) == pytest.approx(1e-28 * 1e8 * 32 * 4e18)
    np.testing.assert_allclose(transmit_energy_j(np.array([0.2, 0.5]), 2.0), [0.4, 1.0])


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
