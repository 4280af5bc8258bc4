import math

import numpy as np
import pytest
from scipy.optimize import brentq

from cosim.bandwidth import LN2, equal_finish_split, required_bandwidth_hz, snr_bandwidth_hz
from cosim.radio import shannon_rate_bps


def rate_bps(bandwidth_hz, a_hz):
    return shannon_rate_bps(bandwidth_hz, 1.0, a_hz, 1.0)  # p·h/N0 = a


def brentq_bandwidth(rate, a):
    """The rate equation's root found numerically, bracketed from the high-SNR and low-SNR sides."""
    high = a
    while rate_bps(high, a) < rate:
        high *= 2
    low = high
    while rate_bps(low, a) > rate:
        low /= 2
    return brentq(lambda b: rate_bps(b, a) - rate, low, high, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def test_closed_form_equals_numeric_root_including_near_the_unlimited_bandwidth_limit():
    rng = np.random.default_rng(0)
    a = 10 ** rng.uniform(4, 10, 600)
    fraction = np.concatenate([10 ** rng.uniform(-12, 0, 300),  # c = R·ln2/a: from high SNR ...
                               1 - 10 ** rng.uniform(-5, -1, 300)])  # ... to within 1e-5 of the limit
    rate = fraction * a / LN2
    closed = required_bandwidth_hz(rate, a)
    numeric = np.array([brentq_bandwidth(r, x) for r, x in zip(rate, a, strict=True)])
    np.testing.assert_allclose(closed, numeric, rtol=1e-9)


def test_unreachable_rates_are_reported_as_infinite_bandwidth():
    a = np.array([1e6, 1e6, 1e6, 0.0, -1.0, 1e6, 1e6])
    limit = a[0] / LN2  # the rate with unlimited bandwidth
    rate = np.array([limit, 2 * limit, limit * (1 + 1e-12), 1.0, 1.0, 0.0, limit * (1 - 1e-9)])
    need = required_bandwidth_hz(rate, a)
    assert np.all(np.isinf(need[:5]))
    assert need[5] == 0.0
    assert np.isfinite(need[6]) and need[6] > 1e12  # just inside the limit: huge but finite
    assert math.isclose(float(rate_bps(need[6], a[6])), rate[6], rel_tol=1e-6)  # c within 1e-9 of 1: ill-conditioned


def test_required_bandwidth_is_scalar_friendly_and_grows_with_rate():
    a = float(snr_bandwidth_hz(0.2, 1e-12, 4e-21))
    assert a == pytest.approx(5e7)
    needs = required_bandwidth_hz(np.linspace(1e5, 0.99 * a / LN2, 50), a)
    assert np.all(np.diff(needs) > 0)
    assert float(rate_bps(required_bandwidth_hz(1e6, a), a)) == pytest.approx(1e6, rel=1e-12)


def brentq_common_delay(bits, a, band):
    """Σ_k B_k(τ) = band solved with brentq in τ, every B_k itself a brentq root: independent of the closed form."""
    def excess(tau):
        return sum(brentq_bandwidth(bits / tau, x) for x in a) - band

    low = bits * LN2 / a.min() * (1 + 1e-9)
    high = low * 2
    while excess(high) > 0:
        high *= 2
    return brentq(excess, low, high, xtol=1e-300, rtol=1e-14, maxiter=500)


def test_equal_finish_split_fills_each_band_and_everyone_finishes_together():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 9))
        a = 10 ** rng.uniform(5, 9, n)
        group = rng.integers(0, 3, n)  # some groups may be empty
        band = 10 ** rng.uniform(5.5, 7.5, 3)
        bits = float(10 ** rng.uniform(4, 7))
        tau, shares = equal_finish_split(bits, a, group, band)
        present = np.bincount(group, minlength=3) > 0
        np.testing.assert_allclose(np.bincount(group, shares, minlength=3)[present], band[present], rtol=1e-12)
        assert np.all(tau[~present] == 0)
        np.testing.assert_allclose(bits / rate_bps(shares, a), tau[group], rtol=1e-9)
        for g in np.flatnonzero(present):
            assert tau[g] == pytest.approx(brentq_common_delay(bits, a[group == g], band[g]), rel=1e-9)


def test_equal_finish_split_of_one_device_is_its_whole_band():
    tau, shares = equal_finish_split(1e6, np.array([5e7]), np.array([0]), np.array([2e7]))
    assert shares[0] == pytest.approx(2e7, rel=1e-15)
    assert tau[0] == pytest.approx(1e6 / float(rate_bps(2e7, 5e7)), rel=1e-12)


def test_equal_finish_split_copes_with_a_member_close_to_its_limit():
    a = np.array([1e9, 1e9, 1e4])  # the weak one needs ~70 s even with unlimited bandwidth
    tau, shares = equal_finish_split(1e6, a, np.zeros(3, dtype=int), np.array([1e8]))
    assert tau[0] > 1e6 * LN2 / 1e4
    np.testing.assert_allclose(1e6 / rate_bps(shares, a), tau[0], rtol=1e-9)
    assert shares.sum() == pytest.approx(1e8, rel=1e-12)
