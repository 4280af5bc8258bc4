"""Several tasks on one base ([[tasks]], cosim.federation.multitask) and the server's energy-budget split
(cosim.budget): validation, one copy of the frozen base, tasks that never touch each other's adapters, the
vehicle → task rule, the per-task traces, and a resumed multi-task run equal to an uninterrupted one."""

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.multitask_memory import one_task
from benchmarks.seed000 import SCHEDULERS, scheduler_table
from cosim.budget import TaskBudgets, split_shares
from cosim.cli import main
from cosim.federation import FederatedTask, MultiTask
from cosim.preflight import check_scenario
from cosim.scenario import EnergyBudgetConfig, LearningConfig, ScenarioError, TaskConfig, load_scenario, parse_scenario
from cosim.schedulers import make_scheduler
from cosim.schedulers.rank import UcbDualConfig
from cosim.trace import read_run
from tests.test_resume import assert_resumes_exactly
from tests.test_seed000 import feedback, observation

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
LEARNING = LearningConfig(model="tiny-bert", clients=4, samples_per_client=8, max_length=24, lora_rank=4,
                          batch_size=4, local_steps=1, eval_samples=32)
TASKS = [TaskConfig(name="sst2", dataset="sst2"), TaskConfig(name="mrpc", dataset="mrpc", clients=3),
         TaskConfig(name="rte", dataset="rte", clients=2, partition="dirichlet", dirichlet_alpha=5.0)]
TINY_TASKS = ('tasks=[{name = "sst2", dataset = "sst2"}, {name = "mrpc", dataset = "mrpc", clients = 4}, '
              '{name = "rte", dataset = "rte", clients = 3}]')


def problems(raw):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"learning": {"model": "tiny-bert"}, **raw})
    return caught.value.problems


# --- the scenario ----------------------------------------------------------------------------------------------


def test_task_fields_are_validated_with_their_index():
    found = problems({"tasks": [{"name": "a", "dataset": "sst2"}, {"name": "a", "dataset": "imagenet"},
                                {"name": "b", "dataset": "rte", "clients": 0, "colour": 1}]})
    assert any(p.startswith("tasks[1].dataset: must be one of sst2, mrpc, qnli, rte") for p in found)
    assert "tasks[2].clients: must be >= 1, got 0" in found
    assert any(p.startswith("tasks[2].colour: unknown key") for p in found)
    assert problems({"tasks": [{"name": "a", "dataset": "sst2"}, {"name": "a", "dataset": "rte"}]}) == [
        "tasks[1].name: 'a' is already tasks[0]'s; give every task its own name"]
    assert problems({"tasks": [{"dataset": "sst2"}]}) == ["tasks[0].name: required; add it"]
    assert problems({"tasks": []})[0].startswith("tasks: empty; add [[tasks]]")
    split = problems({"tasks": [{"name": "a", "dataset": "sst2"}], "learning": {"model": "tiny-bert",
                                                                               "mode": "split"}})
    assert split[0].startswith("tasks: several tasks run in flat mode only")


def test_energy_budget_is_validated():
    assert problems({"energy_budget": {"total_j": 0}}) == ["energy_budget.total_j: must be > 0.0, got 0"]
    assert problems({"energy_budget": {"total_j": 5.0, "period_rounds": 0}}) == [
        "energy_budget.period_rounds: must be >= 1, got 0"]
    three = [{"name": name, "dataset": "sst2"} for name in "abc"]
    assert problems({"tasks": three, "energy_budget": {"total_j": 5.0, "min_share": 0.4}}) == [
        "energy_budget.min_share: 0.4 for each of 3 tasks exceeds the whole budget; lower it to at most 0.3333"]
    clash = {"name": "ucb-dual", "ranks": [2, 4], "energy_budget_j": 2.0}
    assert problems({"energy_budget": {"total_j": 5.0}, "scheduler": clash}) == [
        "scheduler.energy_budget_j: [energy_budget] sets every client's budget; remove one of the two"]


def test_a_task_inherits_what_it_leaves_out():
    scenario = parse_scenario({"learning": {"model": "tiny-bert", "clients": 7, "lr": 0.01},
                               "tasks": [{"name": "a", "dataset": "mrpc"}, {"name": "b", "dataset": "rte",
                                                                              "clients": 3}]})
    a, b = scenario.task_learning()
    assert (a.dataset, a.clients, a.lr) == ("mrpc", 7, 0.01) and (b.dataset, b.clients, b.lr) == ("rte", 3, 0.01)
    assert parse_scenario({}).task_learning() == [parse_scenario({}).learning]


def test_preflight_names_the_task_whose_data_does_not_fit(tmp_path):
    three = tmp_path / "three"
    three.mkdir()
    for split in ("train", "dev"):
        (three / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 3}\n" for i in range(60)))
    scenario = parse_scenario({"learning": {"model": "tiny-bert", "clients": 4, "samples_per_client": 8},
                               "tasks": [{"name": "a", "dataset": "sst2"},
                                         {"name": "b", "dataset": "rte", "samples_per_client": 10_000},
                                         {"name": "c", "dataset": str(three)}]})
    with pytest.raises(ScenarioError) as caught:
        check_scenario(scenario, "s")
    found = caught.value.problems
    assert any(p.startswith("tasks[1].samples_per_client: clients × samples_per_client = 40000 exceeds") for p in found)
    assert "tasks[2].dataset: 3 labels, the first task has 2; tasks share one head width, give them datasets with " \
           "the same number of labels" in found
    assert len(found) == 2


# --- the budget split ------------------------------------------------------------------------------------------


def test_shares_follow_difficulty_and_utilisation_with_a_floor():
    weight, difficulty, utilisation = np.array([1.0, 1.0, 2.0]), np.array([0.4, 0.2, 0.1]), np.array([1.0, 0.5, 3.0])
    shares = split_shares(weight, difficulty, utilisation, a=1.0, b=1.0, floor=0.1)
    raw = np.array([0.4, 0.1, 0.2])  # ω·d·min(u, 1)
    np.testing.assert_allclose(shares, 0.1 + 0.7 * raw / raw.sum())
    assert shares.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(split_shares(weight, np.zeros(3), utilisation, 1.0, 1.0, 0.2), [1 / 3] * 3)
    np.testing.assert_allclose(split_shares(weight, difficulty, utilisation, 0.0, 0.0, 0.0), [0.25, 0.25, 0.5])


def test_task_budgets_per_round_per_client_and_the_next_period():
    budgets = TaskBudgets(EnergyBudgetConfig(total_j=60.0, period_rounds=2, min_share=0.0), [1.0, 1.0])
    candidates = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(budgets.round_budget_j, [15.0, 15.0])
    np.testing.assert_allclose(budgets.client_budget_j(candidates), [5.0, 15.0])  # first round: over its candidates
    budgets.record(np.array([0, 0, 1]), np.array([10.0, 5.0, 3.0]), None)
    np.testing.assert_allclose(budgets.client_budget_j(candidates), [7.5, 15.0])  # its participants per round
    budgets.record(np.array([0, 1, 1, 1]), np.array([15.0, 1.0, 1.0, 1.0]), np.array([0.6, 0.9]))
    # period over: task 0 used 30 of 30 J at accuracy 0.6, task 1 6 of 30 J at 0.9
    raw = np.array([0.4 * 1.0, 0.1 * 0.2])
    np.testing.assert_allclose(budgets.share, raw / raw.sum())
    np.testing.assert_allclose(budgets.client_budget_j(candidates), budgets.share * 30 / np.array([1.5, 2.0]))


def test_ucb_dual_measures_cost_against_the_observed_budget():
    scheduler = make_scheduler(UcbDualConfig(name="ucb-dual", participants=2), np.random.default_rng(0))
    obs = observation(n=2, vehicles=["a", "b"])
    scheduler.plan(dataclasses.replace(obs, task=np.array([0, 1]), budget_j=np.array([2.0, 8.0])))
    scheduler.observe(feedback(2, energy_j=4.0, loss=0.5))
    assert scheduler.bandits["a"].cost_sum[0] == pytest.approx(2.0)
    assert scheduler.bandits["b"].cost_sum[0] == pytest.approx(0.5)


# --- the learning task -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi():
    return MultiTask(LEARNING, TASKS, seed=0)


def frozen_storage(*models):
    """Distinct storages of frozen parameters, and their elements."""
    storages = {param.untyped_storage().data_ptr(): param.numel() for model in models
                for param in model.parameters() if not param.requires_grad}
    return len(storages), sum(storages.values())


def test_three_tasks_hold_one_copy_of_the_frozen_base(multi):
    assert all(task.model is multi.model for task in multi.tasks)
    shared = frozen_storage(*(task.model for task in multi.tasks))
    assert shared == frozen_storage(multi.model)
    singles = [FederatedTask(config.learning(LEARNING), seed=0) for config in TASKS]
    separate = frozen_storage(*(task.model for task in singles))
    assert separate == (3 * shared[0], 3 * shared[1])


def test_vehicle_slots_map_to_tasks_by_their_client_counts(multi):
    clients = multi.client_of(np.arange(20))
    np.testing.assert_array_equal(clients, np.arange(20) % 9)
    np.testing.assert_array_equal(multi.task_of(np.arange(9)), [0, 0, 0, 0, 1, 1, 1, 2, 2])
    assert multi.names == ("sst2", "mrpc", "rte")


def test_training_one_task_leaves_the_others_untouched(multi):
    before = [dict(task.global_state) for task in multi.tasks]
    losses = multi.train([1, 2], round_index=0, ranks=[4, 2])
    assert losses.shape == (2,) and np.all(losses > 0)
    assert any(not torch.equal(before[0][name], value) for name, value in multi.tasks[0].global_state.items())
    for task, old in zip(multi.tasks[1:], before[1:], strict=True):
        assert all(torch.equal(old[name], value) for name, value in task.global_state.items())
    multi.train([1, 2], round_index=1, ranks=[4, 4], edges=[0, 1])  # hierarchical: only task 0's edge models learn
    assert set(multi.tasks[0].edge_states) == {0, 1} and not any(task.edge_states for task in multi.tasks[1:])
    assert len(multi.update_norms) == 2
    multi.aggregate_edges()
    assert all(not task.edge_states and not task.edge_samples for task in multi.tasks)


def test_tasks_train_together_as_they_would_alone(multi):
    """One shared pass over clients of three tasks gives each the update it gets in a pass of its own task."""
    state = multi.state_dict()
    together = multi.train([0, 5, 8, 4], round_index=1, ranks=[4, 4, 4, 4])
    merged = [dict(task.global_state) for task in multi.tasks]
    multi.load_state_dict(state)
    alone = np.concatenate([multi.train([0], 1, [4]), multi.train([5, 4], 1, [4, 4]), multi.train([8], 1, [4])])
    np.testing.assert_allclose(together, alone[[0, 1, 3, 2]], rtol=1e-5)
    for task, expected in zip(multi.tasks, merged, strict=True):
        for name, value in task.global_state.items():
            torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-6)
    accuracy = multi.evaluate_tasks()
    assert accuracy.shape == (3, 2) and multi.evaluate() == pytest.approx(tuple(accuracy.mean(axis=0)))


def test_hierarchical_clients_start_from_their_rsus_edge_model(multi):
    """Between global rounds a client downloads its RSU's edge model, as a single task's client does."""
    state = copy.deepcopy(multi.state_dict())  # a checkpoint's copy: the task keeps mutating its edge dicts
    for round_index, client in enumerate([1, 2], start=1):
        together = multi.train([client], round_index, [4], edges=[0])
    edge = dict(multi.tasks[0].edge_states[0])
    multi.load_state_dict(state)
    for round_index, client in enumerate([1, 2], start=1):
        alone = multi.tasks[0].train([client], round_index, [4], edges=[0])
    np.testing.assert_allclose(together, alone, rtol=1e-6)
    for name, value in multi.tasks[0].edge_states[0].items():
        torch.testing.assert_close(value, edge[name], rtol=1e-5, atol=1e-7)
    multi.load_state_dict(state)


# --- whole runs ------------------------------------------------------------------------------------------------


def test_seed000_multitask_scenario_validates_and_runs_on_tiny_bert(tmp_path):
    scenario = ROOT / "scenarios" / "seed000-multitask.toml"
    tiny = ["learning.model=tiny-bert", "simulation.rounds=2", "learning.eval_every=1", "learning.eval_samples=32",
            "learning.max_length=24", "simulation.start_s=60", "scheduler.participants=6"]
    args = [item for override in tiny for item in ("--set", override)]
    assert main(["validate", str(scenario), *args]) == 0
    assert main(["run", str(scenario), "--out", str(tmp_path / "run"), "--quiet", *args]) == 0
    run = read_run(tmp_path / "run")
    tasks, rounds, parts = run["tasks"], run["rounds"], run["participants"]
    assert list(tasks["task"]) == ["sst2", "mrpc", "qnli"] * 2
    per_round = tasks.groupby("round")
    np.testing.assert_allclose(rounds["accuracy"], per_round["accuracy"].mean())
    np.testing.assert_allclose(per_round["participants"].sum(), rounds["participants"])
    np.testing.assert_allclose(per_round["energy_j"].sum(), rounds["energy_j"])
    np.testing.assert_allclose(per_round["budget_share"].sum(), 1.0)
    np.testing.assert_allclose(tasks["budget_j"], tasks["budget_share"] * 75.0 / 5)
    offsets = np.array([0, 100, 150, 210])
    np.testing.assert_array_equal(parts["task"], np.array(["sst2", "mrpc", "qnli"])[
        np.searchsorted(offsets[1:], parts["client"], side="right")])
    levels = run["aggregations"].groupby("level")["round"]  # the seed's hierarchy, κ = 2: one global round, the last
    assert levels.get_group("global").unique().tolist() == [1] and set(levels.get_group("edge")) <= {0, 1}


@pytest.mark.parametrize("aggregation", [[], ["federation.aggregation=hierarchical",
                                                "federation.global_every_rounds=3"]], ids=["flat", "hierarchical"])
def test_interrupted_multitask_run_resumes_exactly(tmp_path, aggregation):
    """The checkpoint carries every task's adapters and head (and, hierarchical, every task's edge models, live
    across the checkpoint at round 2 with κ = 3); the re-simulation rebuilds the budget split."""
    overrides = ["simulation.rounds=4", "simulation.checkpoint_every_rounds=2", "scheduler.name=ucb-dual",
                 "learning.lora_rank=4", "scheduler.ranks=[2, 4]", "energy_budget.total_j=20.0",
                 "energy_budget.period_rounds=2", TINY_TASKS, *aggregation]
    assert_resumes_exactly(load_scenario(TINY, overrides), tmp_path)
    run = read_run(tmp_path / "whole")
    tasks = run["tasks"]
    assert tasks["accuracy"].notna().sum() == 2 * 3 and (tasks["participants"] > 0).any()
    if aggregation:  # global rounds at rounds 2 and 3 (the last), each carrying the three tasks' models
        glob = run["aggregations"].query("level == 'global'")
        assert glob["round"].tolist() == [2, 3] and (glob["backhaul_s"] > 0).all()


def test_memory_benchmark_runs_each_task_of_the_scenario_alone():
    scenario = ROOT / "scenarios" / "seed000-multitask.toml"
    alone = [load_scenario(scenario, one_task(["simulation.rounds=2"], index)).tasks for index in range(3)]
    assert [[task.name for task in tasks] for tasks in alone] == [["sst2"], ["mrpc"], ["qnli"]]
    assert alone[2][0] == load_scenario(scenario).tasks[2]


def test_seed000_benchmark_compares_the_schedulers_on_the_multitask_scenario():
    """Its UCB-DUAL keeps the split's budgets (no energy_budget_j beside [energy_budget])."""
    scenario = ROOT / "scenarios" / "seed000-multitask.toml"
    base = load_scenario(scenario).scheduler
    configs = [load_scenario(scenario, [f"scheduler={scheduler_table(base, name)}"]).scheduler for name in SCHEDULERS]
    assert configs[0] == base and [config.name for config in configs] == list(SCHEDULERS)
