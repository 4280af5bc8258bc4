"""Path loss, LOS probability and shadowing parameters against the published table formulas, written out by hand."""

import math

import numpy as np
import pytest

from cosim.channel import (
    V2V_NLOS_SHADOWING_STD_DB,
    LargeScaleChannel,
    Shadowing,
    SimplePathloss,
    breakpoint_distance_m,
    doppler_hz,
    los_probability,
    noise_psd_w_per_hz,
    pathloss_db,
    sample_pathloss_db,
    shadowing_decorrelation_m,
    shadowing_std_db,
    simple_pathloss_db,
    uma_pathloss_db,
    umi_pathloss_db,
    v2v_pathloss_db,
    v2v_urban_clear_probability,
    v2v_urban_nlos_pathloss_db,
    vehicle_blockage_loss_db,
)
from mobility.rsu import Links

log10 = math.log10


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


def test_doppler():
    # f_D = v f_c / c: 30 m/s at 5.9 GHz ≈ 590 Hz
    assert float(doppler_hz(30.0, 5.9e9)) == pytest.approx(30.0 * 5.9e9 / 299_792_458.0, rel=1e-15)


def test_breakpoint_distance():
    # TR 38.901 Table 7.4.1-1 note 1: d'_BP = 4 h'_BS h'_UT f_c / c, h' = h − 1 m, c = 3e8 m/s
    assert float(breakpoint_distance_m(10.0, 1.5, 3.5e9)) == pytest.approx(4 * 9.0 * 0.5 * 3.5e9 / 3e8, rel=1e-15)
    assert float(breakpoint_distance_m(25.0, 1.5, 2e9)) == pytest.approx(4 * 24.0 * 0.5 * 2e9 / 3e8, rel=1e-15)
    assert float(breakpoint_distance_m(10.0, 1.5, 3.5e9)) == pytest.approx(210.0)


def test_umi_pathloss_at_tabulated_points():
    # TR 38.901 Table 7.4.1-1, UMi street canyon, f_c = 3.5 GHz, h_BS = 10 m, h_UT = 1.5 m: d'_BP = 210 m
    fc, d_bp = 3.5, 210.0
    d_2d = np.array([50.0, 100.0, 500.0, 1000.0])
    d_3d = np.sqrt(d_2d**2 + 8.5**2)
    pl1 = 32.4 + 21 * np.log10(d_3d) + 20 * log10(fc)
    pl2 = 32.4 + 40 * np.log10(d_3d) + 20 * log10(fc) - 9.5 * log10(d_bp**2 + 8.5**2)
    los = np.where(d_2d <= d_bp, pl1, pl2)
    nlos = np.maximum(los, 35.3 * np.log10(d_3d) + 22.4 + 21.3 * log10(fc) - 0.3 * (1.5 - 1.5))
    np.testing.assert_allclose(umi_pathloss_db(d_2d, 10.0, 1.5, 3.5e9, True), los, rtol=1e-12)
    np.testing.assert_allclose(umi_pathloss_db(d_2d, 10.0, 1.5, 3.5e9, False), nlos, rtol=1e-12)
    assert float(umi_pathloss_db(np.array(100.0), 10.0, 1.5, 3.5e9, True)) == pytest.approx(85.3, abs=0.05)
    # the two LOS slopes meet at the breakpoint
    near, far = umi_pathloss_db(np.array([d_bp - 1e-9, d_bp + 1e-9]), 10.0, 1.5, 3.5e9, True)
    assert near == pytest.approx(far, abs=1e-6)


def test_uma_pathloss_at_tabulated_points():
    # TR 38.901 Table 7.4.1-1, UMa, f_c = 2 GHz, h_BS = 25 m, h_UT = 2.5 m: d'_BP = 4·24·1.5·2e9/3e8 = 960 m
    fc, h_ut = 2.0, 2.5
    d_bp = 4 * 24.0 * 1.5 * 2e9 / 3e8
    d_2d = np.array([10.0, 300.0, 2000.0])
    d_3d = np.sqrt(d_2d**2 + 22.5**2)
    pl1 = 28.0 + 22 * np.log10(d_3d) + 20 * log10(fc)
    pl2 = 28.0 + 40 * np.log10(d_3d) + 20 * log10(fc) - 9 * log10(d_bp**2 + 22.5**2)
    los = np.where(d_2d <= d_bp, pl1, pl2)
    nlos = np.maximum(los, 13.54 + 39.08 * np.log10(d_3d) + 20 * log10(fc) - 0.6 * (h_ut - 1.5))
    np.testing.assert_allclose(uma_pathloss_db(d_2d, 25.0, h_ut, 2e9, True), los, rtol=1e-12)
    np.testing.assert_allclose(uma_pathloss_db(d_2d, 25.0, h_ut, 2e9, False), nlos, rtol=1e-12)


def test_3gpp_pathloss_clamps_below_10_m_and_broadcasts_over_rsus():
    d = np.array([[1.0, 10.0], [5.0, 300.0]])  # (vehicles, RSUs)
    heights = np.array([10.0, 12.0])
    got = umi_pathloss_db(d, heights, 1.5, 3.5e9, np.array([[True, False], [False, True]]))
    assert got.shape == (2, 2)
    assert got[0, 0] == pytest.approx(float(umi_pathloss_db(np.array(10.0), 10.0, 1.5, 3.5e9, True)))


def test_los_probability_at_tabulated_points():
    # TR 38.901 Table 7.4.2-1
    d = np.array([10.0, 18.0, 50.0, 200.0])
    umi = np.where(d <= 18, 1.0, 18 / d + np.exp(-d / 36) * (1 - 18 / d))
    uma = np.where(d <= 18, 1.0, 18 / d + np.exp(-d / 63) * (1 - 18 / d))
    np.testing.assert_allclose(los_probability("umi", d), umi, rtol=1e-12)
    np.testing.assert_allclose(los_probability("uma", d, 1.5), uma, rtol=1e-12)
    assert float(los_probability("umi", np.array(50.0))) == pytest.approx(0.36 + math.exp(-50 / 36) * 0.64)
    # UMa with a tall UT: × (1 + C'(h_UT)·5/4·(d/100)³·exp(−d/150)), C' = ((h_UT − 13)/10)^1.5
    c_ut = ((18.0 - 13.0) / 10.0) ** 1.5
    tall = np.minimum(uma * (1 + c_ut * 1.25 * (d / 100) ** 3 * np.exp(-d / 150)), 1.0)
    tall[d <= 18] = 1.0
    np.testing.assert_allclose(los_probability("uma", d, 18.0), tall, rtol=1e-12)
    # TR 37.885 Table 6.2.1-2
    assert float(los_probability("v2v-highway", np.array(200.0))) == pytest.approx(
        2.1013e-6 * 200**2 - 0.002 * 200 + 1.0193, rel=1e-12)
    assert float(los_probability("v2v-highway", np.array(600.0))) == pytest.approx(0.54 - 0.001 * 125, rel=1e-12)
    assert float(los_probability("v2v-highway", np.array(5.0))) == 1.0
    assert float(los_probability("v2v-highway", np.array(2000.0))) == 0.0
    assert float(los_probability("v2v-urban", np.array(100.0))) == pytest.approx(1.05 * math.exp(-1.14), rel=1e-12)
    assert float(los_probability("v2v-urban", np.array(2.0))) == 1.0
    with pytest.raises(ValueError, match="umi"):
        los_probability("rma", d)  # type: ignore[arg-type]


def test_v2v_pathloss_at_tabulated_points():
    # TR 37.885 Table 6.2.1-1, f_c = 5.9 GHz, d = 100 m
    fc = 5.9
    assert float(v2v_pathloss_db(np.array(100.0), 5.9e9, "highway", True)) == pytest.approx(
        32.4 + 20 * 2 + 20 * log10(fc), rel=1e-12)
    assert float(v2v_pathloss_db(np.array(100.0), 5.9e9, "urban", True)) == pytest.approx(
        38.77 + 16.7 * 2 + 18.2 * log10(fc), rel=1e-12)
    assert float(v2v_pathloss_db(np.array(100.0), 5.9e9, "urban", False, 7.0)) == pytest.approx(
        38.77 + 16.7 * 2 + 18.2 * log10(fc) + 7.0, rel=1e-12)
    assert float(v2v_urban_nlos_pathloss_db(np.array(100.0), 5.9e9)) == pytest.approx(
        36.85 + 30 * 2 + 18.9 * log10(fc), rel=1e-12)


def test_vehicle_blockage_loss_cases():
    # TR 37.885 §6.2.1: max(0, N(μ, σ)); case 2 (both antennas below the 1.6 m blocker) μ = 9 + max(0, 15 log10 d − 41)
    z = np.array([1.0])
    assert vehicle_blockage_loss_db(np.array([100.0]), 1.5, 1.5, z)[0] == pytest.approx(9 + 4.5)
    assert vehicle_blockage_loss_db(np.array([1000.0]), 1.5, 1.5, z)[0] == pytest.approx(9 + (45 - 41) + 4.5)
    # case 3 (one antenna above): μ = 5 + ..., σ = 4; case 1 (both above): 0 dB
    assert vehicle_blockage_loss_db(np.array([100.0]), 5.0, 1.5, z)[0] == pytest.approx(5 + 4)
    assert vehicle_blockage_loss_db(np.array([100.0]), 2.0, 2.0, z)[0] == 0.0
    assert vehicle_blockage_loss_db(np.array([100.0]), 1.5, 1.5, np.array([-5.0]))[0] == 0.0  # never a gain


def test_shadowing_parameters_from_the_tables():
    # TR 38.901 Table 7.4.1-1 (σ_SF) and Table 7.5-6 (SF correlation distance)
    np.testing.assert_array_equal(shadowing_std_db("umi", np.array([True, False])), [4.0, 7.82])
    np.testing.assert_array_equal(shadowing_std_db("uma", np.array([True, False])), [4.0, 6.0])
    np.testing.assert_array_equal(shadowing_decorrelation_m("umi", np.array([True, False])), [10.0, 13.0])
    np.testing.assert_array_equal(shadowing_decorrelation_m("uma", np.array([True, False])), [37.0, 50.0])
    # TR 37.885 Table 6.2.1-1: 3 dB for LOS and NLOSv
    np.testing.assert_array_equal(shadowing_std_db("v2v-highway", np.array([True, False])), [3.0, 3.0])


def test_pathloss_dispatch_matches_the_models():
    d = np.array([30.0, 400.0])
    los = np.array([True, False])
    for model, function in (("umi", umi_pathloss_db), ("uma", uma_pathloss_db)):
        np.testing.assert_array_equal(pathloss_db(model, d, 10.0, 1.5, 3.5e9, los), function(d, 10.0, 1.5, 3.5e9, los))
    d_3d = np.hypot(d, 0.0)
    np.testing.assert_array_equal(pathloss_db("v2v-urban", d, 1.5, 1.5, 5.9e9, los, 3.0),
                                  v2v_pathloss_db(d_3d, 5.9e9, "urban", los, 3.0))


def test_sample_pathloss_draws_los_with_its_probability_and_expects_the_mean_gain():
    d = np.full(100_000, 60.0)
    loss, los = sample_pathloss_db("umi", d, 10.0, 1.5, 3.5e9, np.random.default_rng(0))
    p = float(los_probability("umi", np.array(60.0)))
    assert los.mean() == pytest.approx(p, abs=0.005)
    np.testing.assert_array_equal(loss, umi_pathloss_db(d, 10.0, 1.5, 3.5e9, los.astype(bool)))
    expected, prob = sample_pathloss_db("umi", d[:1], 10.0, 1.5, 3.5e9)
    gain_los = 10 ** (-umi_pathloss_db(d[:1], 10.0, 1.5, 3.5e9, True) / 10)
    gain_nlos = 10 ** (-umi_pathloss_db(d[:1], 10.0, 1.5, 3.5e9, False) / 10)
    assert prob[0] == p
    assert expected[0] == pytest.approx(-10 * log10(p * gain_los[0] + (1 - p) * gain_nlos[0]), rel=1e-12)
    v2v, _ = sample_pathloss_db("v2v-highway", d[:1000], 1.5, 1.5, 5.9e9, np.random.default_rng(1))
    assert np.all(v2v >= v2v_pathloss_db(d[:1000], 5.9e9, "highway", True) - 1e-12)


def test_shadowing_with_a_decorrelation_distance_per_field():
    n = 20_000
    shadowing = Shadowing(1.0, np.array([10.0, 40.0]), rng=np.random.default_rng(3))
    ids = np.array([f"v{i:05d}" for i in range(n)])
    links = Links.every(np.zeros((n, 1)))
    first = shadowing.update(ids, np.zeros((n, 2)), links).copy()
    second = shadowing.update(ids, np.column_stack([np.full(n, 10.0), np.zeros(n)]), links)
    assert np.corrcoef(first[:, 0], second[:, 0])[0, 1] == pytest.approx(math.exp(-1), abs=0.03)
    assert np.corrcoef(first[:, 1], second[:, 1])[0, 1] == pytest.approx(math.exp(-0.25), abs=0.03)


def test_shadowing_follows_gudmundson_exactly_as_vehicles_and_links_come_and_go():
    decorrelation = np.array([10.0, 40.0])  # two fields per link
    shadowing = Shadowing(2.0, decorrelation, rng=np.random.default_rng(5))
    twin = np.random.default_rng(5)
    every = Links.every(np.zeros((3, 2)))
    first = shadowing.update(np.array(["a", "b", "c"]), np.zeros((3, 2)), every).copy()
    assert np.array_equal(first, 2.0 * twin.standard_normal((6, 2)))  # no history: a fresh draw
    # "b" has left, "a" moved 5 m and left RSU 0's coverage, "c" stayed, "0" is new (sorts first).
    links = Links(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 1]), np.zeros(5), 2)
    second = shadowing.update(np.array(["0", "a", "c"]), np.array([[9.0, 9.0], [3.0, 4.0], [0.0, 0.0]]), links)
    rho = np.exp(-np.array([[np.inf], [np.inf], [5.0], [0.0], [0.0]]) / decorrelation)
    before = np.stack([np.zeros(2), np.zeros(2), first[1], first[4], first[5]])
    expected = rho * before + np.sqrt(1 - rho**2) * 2.0 * twin.standard_normal((5, 2))
    assert np.array_equal(second, expected)
    # "a" comes back into RSU 0's coverage: that link starts afresh, its other link carries on.
    third = shadowing.update(np.array(["a"]), np.array([[3.0, 4.0]]), Links.every(np.zeros((1, 2))))
    expected = np.stack([np.zeros(2), second[2]]) + np.stack([np.ones(2), np.zeros(2)]) * 2.0 * twin.standard_normal(
        (2, 2))
    assert np.array_equal(third, expected)


def _links(n, m, distance):
    ids = np.array([f"v{i:05d}" for i in range(n)])
    return ids, np.zeros((n, 2)), Links.every(np.full((n, m), distance))


def test_large_scale_simple_model_reproduces_the_seed_world():
    ids, xy, d = _links(50, 3, 120.0)
    heights = np.array([10.0, 10.0, 12.0])
    model = SimplePathloss(38.0, 1.0, 3.0, 4.0, 10.0)
    loss, los = LargeScaleChannel(model, 2e9, np.random.default_rng(4)).update(ids, xy, d, heights, 1.5)
    shadow = Shadowing(4.0, 10.0, np.random.default_rng(4)).update(ids, xy, d)
    seed_gain_db = -simple_pathloss_db(np.hypot(d.distance_2d_m, heights[d.rsu] - 1.5), 38.0, 1.0, 3.0) + shadow
    np.testing.assert_array_equal(-loss, seed_gain_db)
    assert los.all()


def test_large_scale_umi_state_frequency_shadowing_and_persistence():
    ids, xy, d = _links(20_000, 2, 60.0)
    channel = LargeScaleChannel("umi", 3.5e9, np.random.default_rng(5))
    loss, los = channel.update(ids, xy, d, np.array([10.0, 10.0]), 1.5)
    assert los.mean() == pytest.approx(float(los_probability("umi", np.array(60.0))), abs=0.01)
    shadow = umi_pathloss_db(d.distance_2d_m, 10.0, 1.5, 3.5e9, los) - loss
    assert shadow[los].std() == pytest.approx(4.0, rel=0.03)
    assert shadow[~los].std() == pytest.approx(7.82, rel=0.03)
    again, los_again = channel.update(ids, xy, d, np.array([10.0, 10.0]), 1.5)  # nobody moved: nothing changes
    np.testing.assert_array_equal(los_again, los)
    np.testing.assert_allclose(again, loss, rtol=1e-12)


def test_large_scale_v2v_adds_blockage_only_without_los():
    ids, xy, d = _links(5_000, 1, 200.0)
    loss, los = LargeScaleChannel("v2v-highway", 5.9e9, np.random.default_rng(6)).update(ids, xy, d,
                                                                                        np.array([1.5]), 1.5)
    assert los.mean() == pytest.approx(float(los_probability("v2v-highway", np.array(200.0))), abs=0.02)
    excess = loss - v2v_pathloss_db(d.distance_2d_m, 5.9e9, "highway", True)
    # NLOSv: blockage with mean ≈ E[max(0, N(9, 4.5))] ≈ 9.0 dB on top of 3 dB shadowing
    assert excess[~los].mean() == pytest.approx(9.0, abs=0.4)
    assert abs(excess[los].mean()) < 0.2


def test_large_scale_v2v_urban_draws_building_nlos_with_its_sigma():
    """TR 37.885 urban: building-blocked NLOS with probability 1 − P_clear(d), its own path loss and σ_SF = 4 dB;
    clear links split into LOS and NLOSv by 37.885's P_LOS. Monte Carlo within 3 standard errors."""
    n, distance = 40_000, 60.0
    ids, xy, d = _links(n, 1, distance)
    channel = LargeScaleChannel("v2v-urban", 5.9e9, np.random.default_rng(7))
    loss, los = channel.update(ids, xy, d, np.array([1.5]), 1.5)
    blocked = channel.blocked
    p_nlos = 1.0 - float(v2v_urban_clear_probability(np.array(distance)))
    assert 0.2 < p_nlos < 0.8
    assert abs(blocked.mean() - p_nlos) < 3 * np.sqrt(p_nlos * (1 - p_nlos) / n)
    assert not (los & blocked).any()
    p_los = float(los_probability("v2v-urban", np.array(distance)))
    clear = ~blocked
    assert abs(los[clear].mean() - p_los) < 3 * np.sqrt(p_los * (1 - p_los) / clear.sum())
    shadow = v2v_urban_nlos_pathloss_db(d.distance_2d_m, 5.9e9)[blocked] - loss[blocked]
    assert abs(shadow.std() - V2V_NLOS_SHADOWING_STD_DB) < 3 * V2V_NLOS_SHADOWING_STD_DB / np.sqrt(2 * blocked.sum())
    assert abs(shadow.mean()) < 3 * V2V_NLOS_SHADOWING_STD_DB / np.sqrt(blocked.sum())
    los_shadow = v2v_pathloss_db(d.distance_2d_m, 5.9e9, "urban", True)[los] - loss[los]
    assert abs(los_shadow.std() - 3.0) < 3 * 3.0 / np.sqrt(2 * los.sum())
