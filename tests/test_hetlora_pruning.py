"""HetLoRA's rank self-pruning (Cho et al., 2024) against hand-computed tensors: an update's component norms, the
trailing-components criterion, and the rank the scheduler plans next."""

import numpy as np
import pytest
import torch
from test_seed000 import observation

from cosim.scenario import ScenarioError, parse_scenario
from cosim.schedulers import RoundFeedback, make_scheduler
from cosim.schedulers.rank import HetLoraConfig, trailing_norm
from models.soft import component_norms


def test_component_norms_and_the_trailing_norm_by_hand():
    """Two adapted modules of rank 2: ‖A_i‖² and ‖B_:,i‖² add over the modules; the head does not count."""
    state = {
        "q.lora_A.default.weight": torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # rows: 9, 1
        "q.lora_B.default.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),  # columns: 1, 4
        "v.lora_A.default.weight": torch.tensor([[4.0, 0.0, 0.0], [0.0, 2.0, 2.0]]),  # 16, 8
        "v.lora_B.default.weight": torch.tensor([[0.0, 1.0], [0.0, 0.0]]),  # 0, 1
        "head.weight": torch.tensor([100.0]),
    }
    norms = component_norms(state)
    np.testing.assert_allclose(norms, [[5.0, 1.0], [3.0, np.sqrt(5.0)]])
    assert trailing_norm(norms, 1) == pytest.approx(3.0 * np.sqrt(5.0))  # ‖B[:, 1:2]‖·‖A[1:2, :]‖
    assert trailing_norm(norms, 2) == pytest.approx(np.sqrt(25.0 + 9.0) * np.sqrt(1.0 + 5.0))


def norms(rank: int, tail: int, tail_value: float) -> np.ndarray:
    """(rank, 2) component norms: 1 each, the last `tail` components `tail_value` (their trailing norm is
    tail·tail_value²)."""
    values = np.ones((rank, 2))
    values[rank - tail:] = tail_value
    return values


def feedback(vehicles: list[str], by_vehicle: dict) -> RoundFeedback:
    """The feedback of a round whose plan took `vehicles` in this order: their component norms (None: lost)."""
    component_norms = [by_vehicle[vehicle] for vehicle in vehicles]
    k = len(vehicles)
    arrived = np.array([n is not None for n in component_norms])
    return RoundFeedback(0, 1.0, 0.5, arrived, np.ones(k), None, np.full(k, 0.5), np.full(k, 0.3), component_norms)


def test_a_vehicle_whose_trailing_components_are_weak_trains_a_smaller_rank_next():
    """γ = 0.25, threshold 1, every tier rank 8: ⌊0.25·8⌋ = 2 trailing components. Vehicle a's are 0.1 each
    (trailing norm 2·0.01 = 0.02 < 1: prune to 6), b's 1 (2 ≥ 1: keep 8), c's update was lost (keep 8). Then at
    rank 6 a drops ⌊1.5⌋ = 1 more when its last component is 0.5 (0.25 < 1: 5); b's and c's last two are 1 and 0.5
    (√1.25·√1.25 = 1.25: keep 8)."""
    config = HetLoraConfig(name="hetlora", participants=3, ranks=[8], prune_gamma=0.25, prune_threshold=1.0)
    scheduler = make_scheduler(config, np.random.default_rng(0))
    obs = observation(n=3, vehicles=["a", "b", "c"])
    plan = scheduler.plan(obs)
    vehicles = obs.vehicles[plan.participants].tolist()
    assert dict(zip(vehicles, plan.rank.tolist(), strict=True)) == {"a": 8, "b": 8, "c": 8}
    scheduler.observe(feedback(vehicles, {"a": norms(8, 2, 0.1), "b": norms(8, 2, 1.0), "c": None}))
    plan = scheduler.plan(obs)
    vehicles = obs.vehicles[plan.participants].tolist()
    assert dict(zip(vehicles, plan.rank.tolist(), strict=True)) == {"a": 6, "b": 8, "c": 8}
    scheduler.observe(feedback(vehicles, {"a": norms(6, 1, 0.5), "b": norms(8, 1, 0.5), "c": norms(8, 1, 0.5)}))
    plan = scheduler.plan(obs)
    assert dict(zip(obs.vehicles[plan.participants].tolist(), plan.rank.tolist(), strict=True)) == {
        "a": 5, "b": 8, "c": 8}
    assert scheduler.pruned == {"a": 5}


def test_pruning_is_off_by_default_and_its_settings_are_validated():
    scheduler = make_scheduler(HetLoraConfig(name="hetlora", participants=2, ranks=[8]), np.random.default_rng(0))
    plan = scheduler.plan(observation(n=2, vehicles=["a", "b"]))
    scheduler.observe(feedback(["a", "b"], {"a": np.zeros((8, 2)), "b": np.zeros((8, 2))}))
    assert scheduler.pruned == {} and set(plan.rank) == {8}
    with pytest.raises(ScenarioError, match=r"scheduler\.prune_gamma: must be < 1"):
        parse_scenario({"scheduler": {"name": "hetlora", "prune_gamma": 1.0}, "learning": {"lora_rank": 16}})
