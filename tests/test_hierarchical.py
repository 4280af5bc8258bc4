"""Hierarchical aggregation (vehicles → RSU edge models → server every κ rounds): the edge and global averages
against hand-computed ones, the backhaul on the clock, the handover rule in the traces, and κ = 1 with one RSU and an
ideal backhaul giving the flat run's traces."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_resume import KILLED_AFTER, assert_same_tables, child_env

from cosim.cli import main
from cosim.federation import FederatedTask
from cosim.federation.learning import adapter_payload
from cosim.scenario import LearningConfig, ScenarioError, parse_scenario
from cosim.trace import read_run
from models.lora import rank_profile
from models.trainer import ClientUpdate

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
HIERARCHICAL = ["federation.aggregation=hierarchical", "federation.global_every_rounds=2", "simulation.rounds=5"]


def state(value: float) -> dict[str, torch.Tensor]:
    """A rank-2 adapter of one module and a head, every entry `value`."""
    return {"head.weight": torch.full((1,), value), "m.lora_A.default.weight": torch.full((2, 3), value),
            "m.lora_B.default.weight": torch.full((3, 2), value)}


class FixedTrainer:
    """Client c's update is always `values[c]` (weight `samples[c]`); records the state each client started from."""

    def __init__(self, values: dict[int, float], samples: dict[int, int]) -> None:
        self.values = values
        self.shards = {client: np.arange(n) for client, n in samples.items()}
        self.started: dict[int, float] = {}

    def train(self, start, clients, steps, round_index, ranks=None):
        starts = [start] * len(clients) if isinstance(start, dict) else start
        self.started.update({client: float(s["head.weight"][0]) for client, s in zip(clients, starts, strict=True)})
        return [ClientUpdate(client, state(self.values[client]), len(self.shards[client]), 0.1 * client)
                for client in clients]


def bare_task(trainer: FixedTrainer, start: float) -> FederatedTask:
    """A FederatedTask around a fixed trainer: the aggregation code without a model."""
    task = FederatedTask.__new__(FederatedTask)
    task.cfg, task.seed, task.trainer = LearningConfig(model="tiny-bert", lora_rank=2), 0, trainer
    task.global_state, task.edge_states, task.edge_samples = state(start), {}, {}
    task.payload = adapter_payload(rank_profile(task.global_state), 32)
    return task


def test_edge_and_global_averages_match_hand_computed_ones():
    """κ = 2, two RSUs. Round 0: RSU 0 averages clients 0 (value 1, 1 sample) and 1 (5, 3 samples) into 4, RSU 1
    takes client 2 (7). Round 1: client 3 (2, 4 samples) trains from RSU 0's edge model 4 and replaces it; client 4
    (10, 2 samples) from RSU 1's 7. Global: RSU 0 aggregated 8 samples, RSU 1 4: (8·2 + 4·10) / 12."""
    trainer = FixedTrainer({0: 1.0, 1: 5.0, 2: 7.0, 3: 2.0, 4: 10.0, 5: 0.0}, {0: 1, 1: 3, 2: 2, 3: 4, 4: 2, 5: 1})
    task = bare_task(trainer, start=-1.0)
    losses = task.train([0, 1, 2], 0, [2, 2, 2], edges=[0, 0, 1])
    np.testing.assert_allclose(losses, [0.0, 0.1, 0.2])
    assert trainer.started == {0: -1.0, 1: -1.0, 2: -1.0}  # every RSU starts from the global model
    assert {rsu: float(edge["m.lora_B.default.weight"][0, 0]) for rsu, edge in task.edge_states.items()} == {
        0: 4.0, 1: 7.0}
    assert float(task.global_state["head.weight"][0]) == -1.0  # the server has not aggregated yet
    task.train([4, 3], 1, [2, 2], edges=[1, 0])
    assert trainer.started[3] == 4.0 and trainer.started[4] == 7.0
    assert task.samples([0, 1, 2, 3, 4]) == [1, 3, 2, 4, 2]
    saved = task.state_dict()
    assert task.edge_samples == {0: 8, 1: 4}
    task.aggregate_edges()
    expected = (8 * 2.0 + 4 * 10.0) / 12
    for value in task.global_state.values():
        torch.testing.assert_close(value, torch.full_like(value, expected))
    assert task.edge_states == {}
    task.train([5], 2, [2], edges=[1])
    assert trainer.started[5] == pytest.approx(expected)  # after a global round every RSU holds the global model
    task.load_state_dict(saved)  # a checkpoint carries the edge models
    assert float(task.edge_states[1]["head.weight"][0]) == 10.0 and float(task.global_state["head.weight"][0]) == -1


def test_sparse_uploads_merge_into_the_edge_model():
    """At density 1/2 a client sends one of its two components; the other keeps the edge model's value."""
    trainer = FixedTrainer({0: 3.0}, {0: 1})
    task = bare_task(trainer, start=1.0)
    task.edge_states = {0: state(2.0)}
    task.train([0], 0, [2], densities=[0.5], edges=[0])
    a = task.edge_states[0]["m.lora_A.default.weight"]
    assert trainer.started[0] == 2.0 and sorted(a[:, 0].tolist()) == [2.0, 3.0]


def test_hierarchical_settings_are_validated():
    with pytest.raises(ScenarioError, match=r"federation\.aggregation: .*split"):
        parse_scenario({"federation": {"aggregation": "hierarchical"}, "learning": {"mode": "split"}})
    with pytest.raises(ScenarioError, match="global_every_rounds only apply to aggregation = 'hierarchical'"):
        parse_scenario({"federation": {"global_every_rounds": 3}})
    with pytest.raises(ScenarioError, match=r"federation\.backhaul_rate_bps: must be > 0"):
        parse_scenario({"federation": {"aggregation": "hierarchical", "backhaul_rate_bps": 0.0}})


def run(out: Path, settings: list[str]) -> dict:
    assert main(["run", str(TINY), "--out", str(out), "--quiet", *[x for s in settings for x in ("--set", s)]]) == 0
    return read_run(out)


@pytest.fixture(scope="module")
def hierarchical(tmp_path_factory):
    return run(tmp_path_factory.mktemp("hier") / "run", HIERARCHICAL)


def test_edge_rows_count_exactly_the_arrived_updates(hierarchical):
    """Every arrived update reached its own RSU's edge model; an update whose vehicle handed over before it was
    uploaded is lost (outcome "handover", nothing uploaded) and counts nowhere."""
    parts, aggregations = hierarchical["participants"], hierarchical["aggregations"]
    edges = aggregations[aggregations["level"] == "edge"].set_index(["round", "rsu"])
    arrived = parts[parts["outcome"] == "arrived"].groupby(["round", "rsu"])
    pd.testing.assert_series_equal(edges["contributors"], arrived.size(), check_names=False, check_dtype=False)
    pd.testing.assert_series_equal(edges["bits"], arrived["upload_bits"].sum(), check_names=False,
                                   check_dtype=False)
    between = parts[(parts["outcome"] == "handover") & (parts["compute_time_s"] > 0) & (parts["upload_delay_s"] == 0)]
    assert len(between) > 0  # the tiny scenario has vehicles that hand over while computing
    assert (edges["samples"] == edges["contributors"] * 16).all()  # 8 clients × 16 samples, IID: 16 each


def test_global_rounds_every_kappa_rounds_and_at_the_end_with_the_backhaul_on_the_clock(hierarchical):
    rounds, aggregations = hierarchical["rounds"], hierarchical["aggregations"]
    scenario = hierarchical["manifest"]["scenario"]
    federation, bits = scenario["federation"], hierarchical["manifest"]["upload_bits"]
    global_rows = aggregations[aggregations["level"] == "global"].set_index("round")
    assert list(global_rows.index) == [1, 3, 4]  # κ = 2 over 5 rounds: rounds 2, 4 and the last one
    leg_s = federation["backhaul_latency_s"] + bits / federation["backhaul_rate_bps"]
    np.testing.assert_allclose(global_rows["backhaul_s"], 2 * leg_s, rtol=1e-12)
    edges = aggregations[aggregations["level"] == "edge"]
    for round_index, row in global_rows.iterrows():
        since = edges[(edges["round"] <= round_index) & (edges["round"] > max(
            [r for r in global_rows.index if r < round_index], default=-1))]
        assert row["samples"] == since["samples"].sum() and row["contributors"] == since["rsu"].nunique()
        assert row["bits"] == bits * (row["contributors"] + scenario["rsu"]["count"])
        ended = rounds.set_index("round").loc[round_index]
        assert row["end_s"] == pytest.approx(ended["end_s"]) and row["start_s"] < ended["end_s"]
    assert not np.isnan(rounds.set_index("round").loc[[1, 3, 4], "accuracy"]).any()
    np.testing.assert_array_equal(rounds["start_s"].to_numpy()[1:], rounds["end_s"].to_numpy()[:-1])


def test_kappa_one_with_one_rsu_and_an_ideal_backhaul_is_flat_fedavg(tmp_path):
    """Same traces as the flat run: the edge model of the one RSU becomes the global model every round, at no time."""
    common = ["rsu.count=1", "simulation.rounds=3", "scheduler.name=random", "scheduler.participants=6"]
    flat = run(tmp_path / "flat", common)
    hierarchical = run(tmp_path / "hier", [*common, "federation.aggregation=hierarchical",
                                           "federation.backhaul_latency_s=0.0", "federation.backhaul_rate_bps=inf"])
    for table in ("rounds", "participants", "handovers", "vehicles"):
        pd.testing.assert_frame_equal(flat[table], hierarchical[table], check_exact=True)
    assert flat["aggregations"].empty
    assert list(hierarchical["aggregations"]["level"]) == ["edge", "global"] * 3
    assert (hierarchical["aggregations"]["backhaul_s"] == 0).all()


def test_a_killed_hierarchical_run_with_self_pruning_resumes_to_the_uninterrupted_tables(tmp_path):
    """Checkpoints between global rounds (κ = 3, every 2 rounds) hold edge models; the resumed re-simulation feeds
    HetLoRA's self-pruning the stored component norms, so it plans the same ranks (every rank-2 update prunes to 1)."""
    settings = ["simulation.rounds=5", "simulation.checkpoint_every_rounds=2", "federation.aggregation=hierarchical",
                "federation.global_every_rounds=3", "scheduler.name=hetlora", "scheduler.ranks=[1, 2]",
                "scheduler.participants=10", "scheduler.prune_gamma=0.5", "scheduler.prune_threshold=1e9"]
    reference = tmp_path / "uninterrupted"
    run(reference, settings)
    out = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER, str(TINY), str(out), "2", *settings],
                           env=child_env(), capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_tables(out, reference)
    parts = read_run(reference)["participants"]
    assert (parts.groupby("vehicle")["rank"].agg(lambda ranks: ranks.is_monotonic_decreasing)).all()
    pruned = parts.groupby("vehicle")["rank"].agg(lambda ranks: ranks.iloc[0] == 2 and ranks.iloc[-1] == 1)
    assert pruned.any()
    components = read_run(reference)["components"]
    assert len(components) == parts.loc[parts["outcome"] == "arrived", "rank"].sum()
