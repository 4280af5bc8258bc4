"""World and federation rounds on a scripted road (no SUMO): channel options, batteries, handover outcomes."""

import numpy as np
import pytest
import simpy

from cosim.federation import FlatFederation, Task
from cosim.payload import Payload
from cosim.rng import stream
from cosim.scenario import parse_scenario
from cosim.schedulers import make_scheduler
from cosim.trace import TraceWriter
from cosim.world import World
from mobility.rsu import grid_layout
from mobility.snapshot import Snapshot


class StraightRoad:
    """`n` vehicles driving along y = 50 m at `speed` m/s, staggered by 40 m."""

    net_file = None

    def __init__(self, n=6, speed=15.0):
        self.n, self.speed = n, speed

    def advance(self, time_s, next_s=None):
        x = 40.0 * np.arange(self.n) + self.speed * time_s
        ids = np.array([f"veh{i}" for i in range(self.n)])
        return Snapshot(time_s, ids, np.column_stack([x, np.full(self.n, 50.0)]), np.full(self.n, self.speed),
                        np.zeros(self.n))

    def bounds(self):
        return (0.0, 0.0, 1000.0, 100.0)

    def close(self):
        pass


class CountingTask(Task):
    """Stands in for the learning side: records which clients' updates arrived."""

    round_shape = ("down", "compute", "up")
    compute_samples = 32

    def __init__(self, upload_bits=2_000_000):
        super().__init__(parse_scenario({}).learning, majority_rate=0.5)
        self.payload = Payload.fixed(upload_bits, download_bits=upload_bits)
        self.trained = []

    def client_of(self, slot):
        return slot

    def train(self, clients, round_index, ranks, densities=None):
        self.trained.append(list(clients))
        return 0.0

    def evaluate(self):
        return 0.5, 0.7


def world_for(overrides, n=6, speed=15.0):
    scenario = parse_scenario(overrides)
    env = simpy.Environment()
    rsus = grid_layout((0.0, 0.0, 1000.0, 100.0), rows=1, cols=2, radius_m=300.0, height_m=10.0,
                       bandwidth_hz=10e6)
    events = []
    world = World(env, scenario, StraightRoad(n, speed), rsus, events.extend)
    return scenario, env, world, events


@pytest.mark.parametrize("pathloss", ["simple", "umi", "uma", "v2v-urban"])
@pytest.mark.parametrize(("fading", "correlation"), [("rayleigh", "block"), ("rician", "jakes"), ("none", "block")])
def test_every_channel_option_gives_finite_gains(pathloss, fading, correlation):
    _, env, world, events = world_for({"channel": {"pathloss": pathloss, "fading": fading,
                                                   "fading_correlation": correlation}})
    env.process(world.run())
    env.run(until=30.0)
    served = world.serving >= 0
    assert served.any()
    assert np.all(np.isfinite(world.gain[served])) and np.all(world.gain[served] > 0)
    assert np.all(world.gain[~served] == 0)
    assert any(event.from_rsu >= 0 and event.to_rsu >= 0 for event in events)  # someone crossed the border


def test_round_block_fading_holds_through_a_round_and_redraws_at_the_next():
    _, env, world, _ = world_for({"channel": {"fading_correlation": "round"}}, speed=0.0)
    env.process(world.run())
    env.run(until=0.5)
    world.begin_round()
    first = world.gain.copy()
    assert (first > 0).any()
    env.run(until=5.5)  # ten ticks; nobody moves, so only fast fading could change the gains
    np.testing.assert_array_equal(world.gain, first)
    world.begin_round()
    served = first > 0
    assert np.all(world.gain[served] != first[served]) and np.all(world.gain[~served] == 0)


def test_block_fading_redraws_every_tick():
    _, env, world, _ = world_for({"channel": {"fading_correlation": "block"}}, speed=0.0)
    env.process(world.run())
    env.run(until=0.5)
    first = world.gain.copy()
    env.run(until=1.5)
    served = first > 0
    assert served.any() and np.all(world.gain[served] != first[served])


def test_same_seed_same_gains_and_slots():
    gains = []
    for _ in range(2):
        _, env, world, _ = world_for({"seed": 4, "channel": {"fading_correlation": "jakes"}})
        env.process(world.run())
        env.run(until=12.5)
        gains.append(world.gain.copy())
        np.testing.assert_array_equal(world.slot, np.arange(6))
    np.testing.assert_array_equal(gains[0], gains[1])


def run_rounds(out_dir, overrides, rounds=3, task=None):
    scenario, env, world, _ = world_for({"simulation": {"rounds": rounds, "mobility_tick_s": 0.5}, **overrides})
    task = task or CountingTask()
    trace = TraceWriter(out_dir, {})
    summaries = []
    federation = FlatFederation(env, scenario, world, task,
                                make_scheduler(scenario.scheduler, stream(0, "scheduler")), trace, summaries.append)
    env.process(world.run())
    env.run(until=env.process(federation.run()))
    return trace.rows, task, world


def test_empty_batteries_stop_participation(tmp_path):
    # 1 J cannot pay for a round's compute: every participant fails on its battery, then nobody is a candidate
    rows, task, world = run_rounds(tmp_path, {"energy": {"battery_j": 1.0}})
    first, *later = rows["rounds"]
    assert first["participants"] > 0 and first["arrivals"] == 0
    assert all(r["participants"] == 0 for r in later)
    assert {p["outcome"] for p in rows["participants"]} == {"battery"}
    assert np.all(world.batteries.level_j >= 0) and np.allclose(world.batteries.level_j[:first["participants"]], 0)
    assert task.trained == [[], [], []]


def test_arrivals_are_exactly_what_is_trained(tmp_path):
    rows, task, _ = run_rounds(tmp_path, {"simulation": {"round_deadline_s": 4.0}})
    for round_row, trained in zip(rows["rounds"], task.trained, strict=True):
        arrived = [p["client"] for p in rows["participants"]
                   if p["round"] == round_row["round"] and p["outcome"] == "arrived"]
        assert arrived == trained and round_row["arrivals"] == len(trained)
        assert round_row["arrivals"] + round_row["drops"] == round_row["participants"]


def test_fast_vehicles_lose_uploads_to_handover(tmp_path):
    # 60 m/s across a 500 m cell border during a slow round: some uploads must break on handover
    rows, _, _ = run_rounds(tmp_path, {"simulation": {"round_deadline_s": 20.0}, "energy": {"cycles_per_sample": 1e9}},
                            rounds=3, task=CountingTask(upload_bits=40_000_000))
    outcomes = {p["outcome"] for p in rows["participants"]}
    assert "handover" in outcomes or "coverage_lost" in outcomes
