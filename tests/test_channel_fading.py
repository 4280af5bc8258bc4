"""Monte-Carlo checks of shadowing and fast fading: moments, K factor, Jakes autocorrelation, id alignment."""

import math

import numpy as np
import pytest
from scipy.special import j0

from cosim.channel import CorrelatedFading, Shadowing, doppler_hz, rayleigh_power, rician_power
from mobility.rsu import Links


def estimated_k(power):
    # Rician moments: γ = Var(P)/E[P]² = (1 + 2K)/(1 + K)², so K = sqrt(1 − γ)/(1 − sqrt(1 − γ))
    gamma = power.var() / power.mean() ** 2
    root = math.sqrt(max(1.0 - gamma, 0.0))
    return root / (1.0 - root)


def vehicle_ids(n):
    return np.array([f"v{i:05d}" for i in range(n)])


def test_rayleigh_power_has_unit_mean_and_exponential_tail():
    g = rayleigh_power(200_000, np.random.default_rng(0))
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(g > 1.0) == pytest.approx(math.exp(-1), abs=0.01)


@pytest.mark.parametrize("k", [1.0, 4.0, 10.0])
def test_rician_power_has_unit_mean_and_its_k_factor(k):
    g = rician_power(400_000, k, np.random.default_rng(1))
    assert g.mean() == pytest.approx(1.0, abs=0.01)
    assert estimated_k(g) == pytest.approx(k, rel=0.05)


def test_shadowing_correlation_at_decorrelation_distance_is_1_over_e():
    sigma, d_corr, n = 6.0, 20.0, 20_000
    shadowing = Shadowing(sigma, d_corr, rng=np.random.default_rng(1))
    ids, links = vehicle_ids(n), Links.every(np.zeros((n, 1)))
    first = shadowing.update(ids, np.zeros((n, 2)), links).copy()
    second = shadowing.update(ids, np.column_stack([np.full(n, d_corr), np.zeros(n)]), links)
    assert first.std() == pytest.approx(sigma, rel=0.03)
    assert second.std() == pytest.approx(sigma, rel=0.03)
    assert np.corrcoef(first, second)[0, 1] == pytest.approx(math.exp(-1), abs=0.03)


def test_shadowing_newcomers_are_independent_of_leavers():
    shadowing = Shadowing(4.0, 10.0, rng=np.random.default_rng(2))
    links = Links.every(np.zeros((2, 2)))
    a = shadowing.update(np.array(["a", "b"]), np.zeros((2, 2)), links).copy()
    b = shadowing.update(np.array(["b", "c"]), np.zeros((2, 2)), links)
    np.testing.assert_array_equal(b[:2], a[2:])  # b did not move: its shadowing is unchanged


def snapshots(k_factor, n=4_000, m=5, count=10, seed=3):
    """Power over many links at `count` instants a few hundred wavelengths apart (practically independent)."""
    fading = CorrelatedFading(m, 5.9e9, np.random.default_rng(seed), k_factor=k_factor)
    ids, speed = vehicle_ids(n), np.full(n, 20.0)
    return np.concatenate([fading.update(ids, speed, 1.0 * t).ravel() for t in range(count)])


def test_correlated_rayleigh_has_unit_mean_and_exponential_statistics():
    power = snapshots(0.0)
    assert power.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(power > 1.0) == pytest.approx(math.exp(-1), abs=0.01)
    assert power.var() == pytest.approx(1.0, abs=0.03)  # exponential: Var = mean², so K ≈ 0


@pytest.mark.parametrize("k", [2.0, 8.0])
def test_correlated_rician_matches_its_k_factor(k):
    power = snapshots(k)
    assert power.mean() == pytest.approx(1.0, abs=0.01)
    assert estimated_k(power) == pytest.approx(k, rel=0.05)


@pytest.mark.parametrize("k", [0.0, 3.0])
def test_correlated_fading_autocorrelation_follows_jakes(k):
    # E[h(t) h*(t+τ)] = J0(2π f_D τ) for the complex envelope, averaged over many links
    carrier, speed, n, m = 5.9e9, 30.0, 2_000, 4
    f_d = float(doppler_hz(speed, carrier))
    fading = CorrelatedFading(m, carrier, np.random.default_rng(4), k_factor=k)
    ids = vehicle_ids(n)
    h0 = fading.envelope(ids, np.full(n, speed), 0.0)
    for lag in (0.05, 0.15, 0.3, 0.5, 0.8, 1.2):  # in units of 1/f_D
        tau = lag / f_d
        h = fading.envelope(ids, np.full(n, speed), tau)
        assert np.mean(h0 * np.conj(h)).real == pytest.approx(j0(2 * math.pi * f_d * tau), abs=0.05)


def test_doppler_phase_integrates_varying_speed():
    # trapezoidal ∫v dt: speeds 5, 15, 5 m/s at t = 0, 1, 2 s travel 20 m, like 10 m/s throughout
    ids = vehicle_ids(3)
    steady = CorrelatedFading(2, 2e9, np.random.default_rng(5))
    varying = CorrelatedFading(2, 2e9, np.random.default_rng(5))
    for t, v in enumerate((5.0, 15.0, 5.0)):
        a = steady.envelope(ids, np.full(3, 10.0), float(t))
        b = varying.envelope(ids, np.full(3, v), float(t))
    np.testing.assert_allclose(b, a, rtol=1e-9)
    assert not np.allclose(b, steady.envelope(ids, np.full(3, 10.0), 2.0 + 1e-3))  # it does move


def test_correlated_fading_follows_vehicle_ids():
    fading = CorrelatedFading(3, 2e9, np.random.default_rng(6))
    first = fading.update(np.array(["a", "b"]), np.zeros(2), 0.0)
    second = fading.update(np.array(["b", "c"]), np.zeros(2), 1.0)  # b stood still: same fading
    np.testing.assert_array_equal(second[0], first[1])
    assert not np.allclose(second[1], first[0])  # c is a fresh draw, not a's leftover
    third = fading.update(np.array(["b", "c"]), np.array([0.0, 0.0]), 2.0)
    np.testing.assert_array_equal(third, second)


def test_only_the_links_asked_for_are_computed_and_a_candidate_continues_as_serving():
    fading = CorrelatedFading(50, 5.9e9, np.random.default_rng(7))
    ids, speed = vehicle_ids(3), np.full(3, 10.0)
    first = fading.update(ids, speed, 0.0, np.array([[4, 9], [7, -1], [-1, -1]]))  # serving, candidate
    assert first.shape == (3, 2) and first[1, 1] == 0.0 and first[2].tolist() == [0.0, 0.0]
    # Vehicle 0 hands over to its candidate 9: that link keeps its fading; vehicle 1 gains a candidate.
    after = fading.update(ids, speed, 0.0, np.array([[9, -1], [7, 3], [-1, -1]]))
    assert after[0, 0] == first[0, 1] and after[1, 0] == first[1, 0] and after[1, 1] > 0.0
    # Against the same links computed with every RSU kept: the same statistics, a few links' worth of work.
    many = CorrelatedFading(50, 5.9e9, np.random.default_rng(8)).update(vehicle_ids(4_000), np.full(4_000, 20.0), 0.0,
                                                                       np.tile([[0, 1]], (4_000, 1)))
    assert many.mean() == pytest.approx(1.0, abs=0.03) and np.mean(many > 1.0) == pytest.approx(math.exp(-1), abs=0.02)
