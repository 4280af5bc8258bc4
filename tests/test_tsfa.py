"""TSFA's online stage: the density re-division is exact, the hard limit holds in every round, the long-term limit on
average, an unreachable limit schedules nobody; and the whole scheduler through the engine on the static cell."""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from cosim.cli import main
from cosim.payload import Leg, Payload
from cosim.radio import RateModel
from cosim.schedulers import RoundFeedback, make_scheduler
from cosim.schedulers.tsfa import TsfaConfig, densify
from cosim.trace import read_run
from tests.test_lyapunov import NOISE, POWER_W, observation

ROOT = Path(__file__).resolve().parents[1]
RANK = 8
# MiniLM with LoRA on query and value: a 770-value head, 12 modules × (384 + 384) values per rank component
ADAPTER = Payload((Leg("up", 770, 9216),), default_rank=RANK, ranks=tuple(range(1, RANK + 1)), adapted_modules=12,
                  default_density=0.75)


def cell(rng, n=20, bands=(10e6,), radius_m=500.0):
    """A static round: devices uniform in the disk, d^-3 path loss (30 dB at 1 m), Rayleigh fading."""
    distance = radius_m * np.sqrt(rng.uniform(0.01, 1.0, n))
    gain = 1e-3 * distance**-3.0 * rng.exponential(size=n)
    obs = observation(gain, rng.integers(len(bands), size=n), bands)
    return dataclasses.replace(obs, payload=ADAPTER)


def air_time(obs, plan):
    return plan.planned_air_time_s(obs)  # on a static channel the realised time (cosim.payload's contract)


def feedback(round_index, times):
    k = len(times)
    return RoundFeedback(round_index, float(times.max(initial=0.0)), float(times.max(initial=0.0)),
                         np.ones(k, dtype=bool), np.zeros(k), None, times)


def test_densify_maximises_the_kept_components_within_each_band():
    rng = np.random.default_rng(0)
    rate = RateModel(NOISE)
    bits = ADAPTER.upload_bits(RANK, np.arange(1, 5) / RANK).astype(float)
    for _ in range(30):
        members = 4
        rsu = rng.integers(2, size=members)
        gain = 1e-3 * rng.uniform(50, 500, members) ** -3.0 * rng.exponential(size=members)
        need = rate.bandwidth_for_rate_hz(bits[None, :] / 0.05, POWER_W, gain[:, None])
        bands = np.bincount(rsu, need[:, 0], minlength=2) * rng.uniform(1.0, 4.0, 2)
        kept = densify(need, rsu, bands)
        assert np.all(np.bincount(rsu, need[np.arange(members), kept - 1], minlength=2) <= bands)
        best = max(sum(levels) for levels in itertools.product(range(1, 5), repeat=members)
                   if np.all(np.bincount(rsu, need[np.arange(members), np.array(levels) - 1], minlength=2) <= bands))
        assert kept.sum() == best


def test_per_round_limit_holds_in_every_round_with_densities_by_channel():
    rng = np.random.default_rng(1)
    tsfa = make_scheduler(TsfaConfig(name="tsfa", tau_bar_s=0.05, limit="per-round"), rng)
    scheduled = 0
    for t in range(100):
        obs = dataclasses.replace(cell(rng, bands=(10e6, 5e6)), round_index=t)
        plan = tsfa.plan(obs)
        times = air_time(obs, plan)
        assert np.all(times <= 0.05 * (1 + 1e-9))
        kept = plan.density * RANK
        np.testing.assert_allclose(kept, np.rint(kept))
        assert np.all((kept >= 1) & (kept <= 6))  # at most K0 = round(0.75·8)
        for r in range(2):  # within an RSU a better channel never keeps fewer components
            mine = obs.rsu[plan.participants] == r
            order = np.argsort(-obs.gain[plan.participants][mine])
            assert np.all(np.diff(kept[mine][order]) <= 0)
        scheduled += len(plan.participants)
        tsfa.observe(feedback(t, times))
    assert scheduled > 100


@pytest.mark.parametrize("drift", ["exact", "linear"])
def test_long_term_limit_holds_on_average_with_a_bounded_queue(drift):
    rng = np.random.default_rng(2)
    tau_bar = 0.05
    tsfa = make_scheduler(TsfaConfig(name="tsfa", tau_bar_s=tau_bar, drift=drift, weight_horizon_rounds=100.0), rng)
    delays, densities = [], []
    rounds = 150
    for t in range(rounds):
        obs = dataclasses.replace(cell(rng), round_index=t)
        plan = tsfa.plan(obs)
        times = air_time(obs, plan)
        assert times.max(initial=0.0) == pytest.approx(tsfa.planned_delay_s)
        delays.append(times.max(initial=0.0))
        densities.extend(plan.density.tolist())
        tsfa.observe(feedback(t, times))
    assert np.mean(delays) <= tau_bar + tsfa.queue_s / rounds + 1e-12
    assert tsfa.queue_s < 5 * tau_bar
    assert min(densities) < 0.75  # the limit thins some uploads below the preset


@pytest.mark.parametrize("limit", ["per-round", "long-term"])
def test_a_limit_no_vehicle_can_meet_schedules_nobody(limit):
    rng = np.random.default_rng(3)
    tsfa = make_scheduler(TsfaConfig(name="tsfa", tau_bar_s=1e-6, limit=limit), rng)
    empty = 0
    for t in range(20):
        obs = dataclasses.replace(cell(rng), round_index=t)
        plan = tsfa.plan(obs)
        times = air_time(obs, plan)
        empty += len(plan.participants) == 0
        if limit == "per-round":
            assert len(plan.participants) == 0
        tsfa.observe(feedback(t, times))
    assert empty >= 19


def test_tsfa_through_the_engine_meets_the_per_round_limit(tmp_path):
    """The static cell with tiny-BERT: every round's realised air time within τ̄, sparse uploads at the planned
    densities with their bits, the offline preset in the manifest."""
    tau_bar = 0.004
    args = ["run", str(ROOT / "scenarios" / "seed002-static.toml"), "--out", str(tmp_path), "--quiet"]
    for override in ("learning.model=tiny-bert", "simulation.rounds=3", "learning.eval_samples=32",
                     "learning.samples_per_client=16", "learning.local_steps=1", "learning.batch_size=8",
                     "learning.compression.calibration_samples=64", "scheduler.limit=per-round",
                     f"scheduler.tau_bar_s={tau_bar}"):
        args += ["--set", override]
    assert main(args) == 0
    run = read_run(tmp_path)
    parts, rounds = run["participants"], run["rounds"]
    assert (rounds["participants"] > 0).all()
    per_round = parts.groupby("round")["scheduled_air_time_s"].max()
    assert (per_round <= tau_bar * (1 + 1e-6)).all()
    preset = run["manifest"]["offline_preset"]
    assert 0 < preset["density"] <= 1 and preset["samples"] == 64 and len(preset["top_eigenvalues"]) == RANK
    assert parts["density"].max() * RANK <= np.rint(preset["density"] * RANK) + 1e-9
    by_density = parts.groupby("density")["upload_bits"].agg(["min", "max"])
    assert (by_density["min"] == by_density["max"]).all() and by_density["min"].is_monotonic_increasing
