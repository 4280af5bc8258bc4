"""Energy formulas, device profiles and vectorised batteries."""

import numpy as np
import pytest

from cosim.energy import (
    DEVICE_PROFILES,
    Batteries,
    compute_energy_j,
    compute_time_s,
    device_profile,
    idle_energy_j,
    transmit_energy_j,
)


def test_energy_formulas():
    assert compute_time_s(1e8, 32, 2e9) == pytest.approx(1.6)
    assert compute_energy_j(1e8, 32, 2e9, 1e-28) == pytest.approx(1e-28 * 1e8 * 32 * 4e18)
    np.testing.assert_allclose(transmit_energy_j(np.array([0.2, 0.5]), 2.0), [0.4, 1.0])
    np.testing.assert_allclose(idle_energy_j(1.5, np.array([2.0, 4.0])), [3.0, 6.0])
    np.testing.assert_allclose(compute_time_s(1e8, np.array([10, 20]), 1e9), [1.0, 2.0])


def test_profiles_are_consistent_and_ordered():
    assert set(DEVICE_PROFILES) == {"obu-low", "obu-mid", "obu-high"}
    for profile in DEVICE_PROFILES.values():
        # energy over time is the dynamic power κ f³
        power = profile.compute_energy_j(64) / profile.compute_time_s(64)
        assert power == pytest.approx(profile.compute_power_w, rel=1e-12)
        assert profile.battery_j > 0 and profile.tx_power_w > 0 and profile.idle_power_w > 0
    low, mid, high = (device_profile(name) for name in ("obu-low", "obu-mid", "obu-high"))
    assert low.compute_time_s(64) > mid.compute_time_s(64) > high.compute_time_s(64)
    assert mid.compute_time_s(32) == pytest.approx(0.1 * 32)  # the scenario defaults: 2e8 cycles at 2 GHz
    with pytest.raises(ValueError, match="obu-mid"):
        device_profile("obu-huge")


def test_batteries_drain_to_zero_and_report_depletion():
    batteries = Batteries()
    first = batteries.add(100.0, 2)
    second = batteries.add(np.array([50.0]), 1)
    np.testing.assert_array_equal(first, [0, 1])
    np.testing.assert_array_equal(second, [2])
    drawn = batteries.drain(np.array([0, 2, 2]), np.array([30.0, 40.0, 40.0]))  # slot 2 asks 80 J of its 50 J
    np.testing.assert_allclose(drawn, [30.0, 50.0, 50.0])
    np.testing.assert_allclose(batteries.level_j, [70.0, 100.0, 0.0])
    np.testing.assert_array_equal(batteries.depleted, [False, False, True])
    np.testing.assert_allclose(batteries.fraction, [0.7, 1.0, 0.0])
    batteries.drain(1, 10.0)
    assert batteries.level_j[1] == 90.0 and len(batteries) == 3
