import numpy as np

from cosim.payload import Payload
from cosim.radio import RateModel
from cosim.schedulers import Observation, make_scheduler, scheduler_names
from cosim.schedulers.base import equal_share
from cosim.schedulers.simple import AllInConfig, RandomConfig


def observation(n=12, rsus=3):
    rng = np.random.default_rng(0)
    return Observation(
        round_index=0, time_s=0.0, vehicles=np.array([f"v{i}" for i in range(n)]), rsu=np.arange(n) % rsus,
        distance_m=rng.uniform(10, 200, n), gain=rng.uniform(1e-12, 1e-9, n), speed_mps=np.full(n, 10.0),
        dwell_s=np.full(n, 30.0), battery_j=np.full(n, 100.0), tx_power_w=np.full(n, 0.2),
        compute_time_s=np.full(n, 1.0), rsu_bandwidth_hz=np.array([10e6, 20e6, 5e6]), rate=RateModel(4e-21),
        payload=Payload.fixed(1_000_000, 1_000_000), deadline_s=5.0)


def test_registry_names():
    assert {"all-in", "random"} <= set(scheduler_names())


def test_equal_share_splits_each_rsu_band():
    shares = equal_share(np.array([0, 0, 1, 2, 2, 2]), np.array([10.0, 20.0, 6.0]))
    np.testing.assert_allclose(shares, [5, 5, 20, 2, 2, 2])


def test_all_in_takes_everyone_and_uses_every_band_fully():
    obs = observation()
    plan = make_scheduler(AllInConfig(name="all-in"), np.random.default_rng(0)).plan(obs)
    np.testing.assert_array_equal(plan.participants, np.arange(obs.count))
    used = np.bincount(obs.rsu[plan.participants], weights=plan.bandwidth_hz, minlength=3)
    np.testing.assert_allclose(used, obs.rsu_bandwidth_hz)


def test_random_is_reproducible_and_distinct():
    obs = observation()
    config = RandomConfig(name="random", participants=5)
    first = make_scheduler(config, np.random.default_rng(7)).plan(obs)
    second = make_scheduler(config, np.random.default_rng(7)).plan(obs)
    np.testing.assert_array_equal(first.participants, second.participants)
    assert len(set(first.participants.tolist())) == 5
    small = make_scheduler(RandomConfig(name="random", participants=50), np.random.default_rng(0)).plan(obs)
    assert len(small.participants) == obs.count
