"""Seed 000: rank-dependent compute, the UCB-DUAL bandit on synthetic instances with a known optimum, and the three
rank schedulers (UCB-DUAL, HomoLoRA, HetLoRA) on hand-made observations."""

import numpy as np
import pytest
from scipy.optimize import linprog

from cosim.compute import ComputeModel
from cosim.federation.learning import adapter_payload
from cosim.federation.task import Task
from cosim.radio import RateModel
from cosim.scenario import ScenarioError, parse_scenario
from cosim.schedulers import Observation, RoundFeedback, make_scheduler
from cosim.schedulers.rank import HetLoraConfig, HomoLoraConfig, UcbDual, UcbDualConfig, tier
from models.backbone import load_backbone
from models.flops import frozen_linear_macs
from models.lora import RankProfile, add_lora, rank_profile, trainable_state

# --- compute grows with the rank -------------------------------------------------------------------------------


def test_tiny_bert_flops_match_a_hand_count():
    """tiny-BERT: 2 layers of hidden 32, intermediate 64; LoRA on query and value."""
    model, _ = load_backbone("tiny-bert", num_labels=2, seed=0)
    model = add_lora(model, rank=4, alpha=8.0, dropout=0.0, target_modules=["query", "value"])
    per_layer = 4 * 32 * 32 + 32 * 64 + 64 * 32  # q, k, v, attention output; intermediate; output
    assert frozen_linear_macs(model.encoder) == 2 * per_layer
    profile = rank_profile(trainable_state(model))
    assert profile.per_rank_values == 2 * 2 * (32 + 32)  # 2 layers × (query, value) × (in + out)
    compute = ComputeModel.from_layers(frozen_linear_macs(model.encoder), profile.per_rank_values, profile.rank)
    base = 4 * 2 * per_layer  # forward 2·MACs, backward through the frozen weights 2·MACs
    per_rank = 6 * 256  # adapter forward 2·r·(in+out), its backward twice that
    np.testing.assert_allclose(compute.flop_per_token([1, 4, 16]), [base + per_rank, base + 4 * per_rank,
                                                                     base + 16 * per_rank])
    assert compute.scale(None) == 1.0 and compute.scale(4) == 1.0
    assert compute.scale(16) == pytest.approx((base + 16 * per_rank) / (base + 4 * per_rank))


class _Probe(Task):
    round_shape = ("down", "compute", "up")
    compute_samples = 32

    def train(self, clients, round_index, ranks, densities=None):
        return 0.0

    def evaluate(self):
        return 0.0, 0.0


def test_phases_and_planner_share_the_rank_dependent_compute():
    probe = _Probe(parse_scenario({}).learning, majority_rate=0.5)
    probe.payload = adapter_payload(RankProfile(rank=8, fixed_values=10, per_rank_values=100, adapted_modules=2), 32)
    assert probe.phases(2)[1].samples == 32  # no compute model: rank-free, as before
    probe.compute_model = ComputeModel(base_flop_per_token=1000.0, flop_per_token_per_rank=100.0, default_rank=8)
    samples = [probe.phases(rank)[1].samples for rank in (2, 8)]
    assert samples == pytest.approx([32 * 1200 / 1800, 32.0])
    obs = observation(payload=probe.payload, compute=probe.compute_model)
    np.testing.assert_allclose(obs.compute_time_at(2), obs.compute_time_s * 1200 / 1800)
    np.testing.assert_allclose(obs.compute_time_at(np.full(obs.count, 8)), obs.compute_time_s)


# --- UCB-DUAL on synthetic instances ---------------------------------------------------------------------------

HORIZONS = np.array([100, 300, 1_000, 3_000, 10_000])
# (mean reward, mean cost relative to the per-round budget): costs grow with the rank, rewards saturate; the budget
# binds, so the optimum mixes two arms.
INSTANCES = {
    "two-arm mix": (np.array([0.2, 0.5, 0.75, 0.85]), np.array([0.2, 0.6, 1.2, 2.0]) / 0.9),
    "steep costs": (np.array([0.1, 0.5, 0.9, 0.95]), np.array([0.2, 0.6, 1.6, 2.0])),
}


def lp_optimum(reward, cost):
    """Best expected reward per round of any mixed policy that meets the budget on average (cost ≤ 1)."""
    result = linprog(-reward, A_ub=[cost], b_ub=[1.0], A_eq=[np.ones_like(reward)], b_eq=[1.0],
                     bounds=[(0, 1)] * len(reward))
    return -result.fun


def play(reward, cost, horizon, seed, eta=1.0):
    """Cumulative regret against the LP optimum and cumulative budget violation at each horizon, and the mean cost.
    Rewards are Bernoulli, costs Gaussian around their means (clipped at 0)."""
    rng = np.random.default_rng(seed)
    bandit, best = UcbDual(len(reward), eta), lp_optimum(reward, cost)
    regret = violation = spent = 0.0
    at = {}
    for t in range(1, horizon + 1):
        arm = bandit.choose()
        c = max(0.0, cost[arm] + 0.1 * rng.standard_normal())
        bandit.update(arm, float(rng.random() < reward[arm]), c)
        regret += best - reward[arm]
        violation += c - 1.0
        spent += c
        if t in HORIZONS:
            at[t] = (regret, max(violation, 0.0))
    return np.array([at[t] for t in HORIZONS]), spent / horizon


def loglog_slope(values):
    return np.polyfit(np.log(HORIZONS), np.log1p(np.maximum(values, 0.0)), 1)[0]


@pytest.mark.parametrize("instance", INSTANCES)
def test_ucb_dual_regret_and_violation_are_sublinear_and_the_budget_is_met(instance):
    reward, cost = INSTANCES[instance]
    for seed in range(2):
        curves, mean_cost = play(reward, cost, HORIZONS[-1], seed)
        regret, violation = curves.T
        assert loglog_slope(regret) < 1.0, regret
        assert loglog_slope(violation) < 1.0, violation
        assert regret[-1] < 0.05 * HORIZONS[-1] * lp_optimum(reward, cost)
        assert mean_cost == pytest.approx(1.0, rel=0.05)


def test_ucb_dual_takes_the_best_arm_when_the_budget_does_not_bind():
    reward, cost = np.array([0.2, 0.5, 0.8]), np.array([0.1, 0.2, 0.3])
    rng = np.random.default_rng(1)
    bandit = UcbDual(3, eta=1.0)
    for _ in range(3_000):
        arm = bandit.choose()
        bandit.update(arm, float(rng.random() < reward[arm]), cost[arm])
    assert bandit.plays[2] > 0.9 * 3_000 and bandit.dual == 0.0


def test_ucb_dual_dual_variable_follows_the_overspend():
    bandit = UcbDual(2, eta=0.5)
    bandit.update(0, 1.0, 3.0)  # two budgets spent: λ grows by η·(3 − 1)
    assert bandit.dual == pytest.approx(1.0)
    bandit.update(1, 0.0, 0.0)  # nothing spent: λ shrinks by η/√2
    assert bandit.dual == pytest.approx(1.0 - 0.5 / np.sqrt(2))
    for _ in range(20):
        bandit.update(1, 0.0, 0.0)
    assert bandit.dual == 0.0  # never negative


# --- the schedulers --------------------------------------------------------------------------------------------

PAYLOAD = adapter_payload(RankProfile(rank=16, fixed_values=66, per_rank_values=256, adapted_modules=4), 32)


def observation(n=12, rsus=3, vehicles=None, payload=PAYLOAD, compute=None):
    rng = np.random.default_rng(0)
    return Observation(
        round_index=0, time_s=0.0, vehicles=np.array(vehicles or [f"v{i}" for i in range(n)]), rsu=np.arange(n) % rsus,
        distance_m=rng.uniform(10, 200, n), gain=rng.uniform(1e-12, 1e-9, n), speed_mps=np.full(n, 10.0),
        dwell_s=np.full(n, 30.0), battery_j=np.full(n, 100.0), tx_power_w=np.full(n, 0.2),
        compute_time_s=np.full(n, 1.0), rsu_bandwidth_hz=np.array([10e6, 20e6, 5e6]), rate=RateModel(4e-21),
        payload=payload, deadline_s=5.0, compute=compute)


def feedback(k, energy_j, loss, arrived=None):
    arrived = np.ones(k, dtype=bool) if arrived is None else arrived
    return RoundFeedback(0, 1.0, 0.5, arrived, np.full(k, energy_j), None, np.full(k, 0.5), np.full(k, loss))


@pytest.mark.parametrize("config", [UcbDualConfig(name="ucb-dual", participants=5),
                                    HomoLoraConfig(name="homolora", participants=5),
                                    HetLoraConfig(name="hetlora", participants=5)])
def test_rank_schedulers_pick_the_random_subset_with_equal_shares(config):
    """Same participants as `random` with the same stream: a comparison of the three isolates the rank."""
    obs = observation()
    plan = make_scheduler(config, np.random.default_rng(4)).plan(obs)
    random = make_scheduler(parse_scenario({"scheduler": {"name": "random", "participants": 5}}).scheduler,
                            np.random.default_rng(4)).plan(obs)
    np.testing.assert_array_equal(plan.participants, random.participants)
    np.testing.assert_array_equal(plan.bandwidth_hz, random.bandwidth_hz)
    assert plan.rank is not None and set(plan.rank) <= {2, 4, 8, 16}
    assert np.all(plan.scheduled_bits(obs.payload) == PAYLOAD.upload_bits(plan.rank))


def test_homolora_uses_one_rank_the_tasks_unless_set():
    obs = observation()
    task_rank = make_scheduler(HomoLoraConfig(name="homolora"), np.random.default_rng(0)).plan(obs)
    assert set(task_rank.rank) == {16}
    assert set(make_scheduler(HomoLoraConfig(name="homolora", rank=4), np.random.default_rng(0)).plan(obs).rank) == {4}


def test_hetlora_tier_is_a_stable_function_of_the_vehicle():
    obs = observation(n=40)
    scheduler = make_scheduler(HetLoraConfig(name="hetlora", participants=40), np.random.default_rng(0))
    plan = scheduler.plan(obs)
    expected = [(2, 4, 8, 16)[tier(str(v), 4)] for v in obs.vehicles[plan.participants]]
    np.testing.assert_array_equal(plan.rank, expected)
    assert len(set(plan.rank)) == 4  # 40 ids spread over every tier
    assert tier("veh7", 4) == tier("veh7", 4) and 0 <= tier("veh7", 3) < 3


def test_ucb_dual_bandits_follow_their_vehicles():
    """Every arm once first; a vehicle's state is keyed by its id, so it survives a change of index and RSU."""
    scheduler = make_scheduler(UcbDualConfig(name="ucb-dual", participants=4), np.random.default_rng(0))
    obs = observation(n=3, vehicles=["a", "b", "c"])
    for expected in (2, 4, 8, 16):
        plan = scheduler.plan(obs)
        assert set(plan.rank) == {expected}
        scheduler.observe(feedback(3, energy_j=1.0, loss=0.5))
    moved = observation(n=4, vehicles=["new", "c", "b", "a"])  # reordered, other RSUs, one newcomer
    plan = scheduler.plan(moved)
    ranks = dict(zip(moved.vehicles[plan.participants], plan.rank, strict=True))
    assert ranks["new"] == 2 and scheduler.bandits["a"].rounds == 4


def test_ucb_dual_reward_and_cost_from_the_feedback():
    scheduler = make_scheduler(UcbDualConfig(name="ucb-dual", participants=2, energy_budget_j=4.0, eta=0.5),
                               np.random.default_rng(0))
    scheduler.plan(observation(n=2, vehicles=["a", "b"]))
    scheduler.observe(feedback(2, energy_j=6.0, loss=0.7, arrived=np.array([True, False])))
    a, b = scheduler.bandits["a"], scheduler.bandits["b"]
    assert a.reward_sum[0] == pytest.approx(np.exp(-0.7)) and b.reward_sum[0] == 0.0  # lost update: no utility
    assert a.cost_sum[0] == b.cost_sum[0] == pytest.approx(1.5)
    assert a.dual == pytest.approx(0.5 * 0.5)


def test_ranks_the_task_cannot_train_fail_at_plan_time_and_in_validate():
    small = adapter_payload(RankProfile(rank=8, fixed_values=66, per_rank_values=256, adapted_modules=4), 32)
    with pytest.raises(ValueError, match=r"scheduler.ranks: ranks \[16\] are not offered"):
        make_scheduler(UcbDualConfig(name="ucb-dual"), np.random.default_rng(0)).plan(observation(payload=small))
    with pytest.raises(ScenarioError, match=r"scheduler.ranks: ranks \[16\] .*raise learning.lora_rank to 16"):
        parse_scenario({"scheduler": {"name": "ucb-dual"}, "learning": {"lora_rank": 8}})
    with pytest.raises(ScenarioError, match=r"scheduler.rank: ranks \[4\] .*split mode"):
        parse_scenario({"scheduler": {"name": "homolora", "rank": 4}, "learning": {"mode": "split"}})
    with pytest.raises(ScenarioError, match=r"scheduler\.energy_budget_j: must be > 0"):
        parse_scenario({"scheduler": {"name": "ucb-dual", "energy_budget_j": 0}, "learning": {"lora_rank": 16}})
    with pytest.raises(ScenarioError, match=r"scheduler\.ranks: must be distinct positive ranks"):
        parse_scenario({"scheduler": {"name": "hetlora", "ranks": [2, 2]}, "learning": {"lora_rank": 16}})
    assert parse_scenario({"scheduler": {"name": "hetlora"}, "learning": {"lora_rank": 16}}).scheduler.ranks == [
        2, 4, 8, 16]
