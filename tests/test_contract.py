"""The contract between a plan and the radio (cosim.payload): on a static channel, for every registered scheduler,
both learning modes and any SNR gap or spectral-efficiency cap, each participant's realised time on the air is what
the plan implied, the round's τ is the planned one, and a delay-budget queue grows by exactly that."""

import math

import numpy as np
import pytest
import simpy

from cosim.federation import FlatFederation, Task
from cosim.federation.learning import adapter_payload, split_payload
from cosim.rng import stream
from cosim.scenario import parse_scenario
from cosim.schedulers import make_scheduler, scheduler_names
from cosim.world import World
from mobility.config import place_rsus
from mobility.static import StaticDiskMobility
from models.lora import RankProfile
from models.split import SplitExchange

TAU_BAR_S = 0.3
SCHEDULERS = {"all-in": {}, "random": {"participants": 4}, "lyapunov": {"tau_bar_s": TAU_BAR_S},
              "aaba": {"tau_bar_s": TAU_BAR_S}, "gs": {"tau_bar_s": TAU_BAR_S},
              "ucb-dual": {"participants": 4, "ranks": [8]}, "homolora": {"participants": 4},
              "hetlora": {"participants": 4, "ranks": [8]}, "tsfa": {"tau_bar_s": TAU_BAR_S}}
MODES = {  # MiniLM-like sizes at a small scale: an adapter of rank 8, and a split exchange of 8 × 32 tokens
    "flat": adapter_payload(RankProfile(8, fixed_values=770, per_rank_values=18_432, adapted_modules=12), 32),
    "split": split_payload(SplitExchange(tokens=256, hidden_size=384, rank=8, adapted_modules=18), 32),
}


def test_every_registered_scheduler_is_covered():
    assert set(SCHEDULERS) == set(scheduler_names())


class StandIn(Task):
    """The learning side reduced to its payload: trains nothing, so the contract is checked on the radio alone."""

    compute_samples = 8

    def __init__(self, mode, payload):
        super().__init__(parse_scenario({}).learning, majority_rate=0.5)
        self.payload = payload
        self.round_shape = ("down", "compute", "up") if mode == "flat" else ("up", "down", "compute", "up")

    def train(self, clients, round_index, ranks, densities=None):
        return 0.0

    def evaluate(self):
        return 0.5, 0.7


class Recorder:
    """Wraps a scheduler: keeps every observation, plan, queue before and after, and feedback."""

    def __init__(self, inner):
        self.inner, self.rounds = inner, []

    def plan(self, obs):
        plan = self.inner.plan(obs)
        self.rounds.append({"obs": obs, "plan": plan, "queue": getattr(self.inner, "queue_s", None),
                            "planned": getattr(self.inner, "planned_delay_s", None)})
        return plan

    def observe(self, feedback):
        self.inner.observe(feedback)
        self.rounds[-1].update(feedback=feedback, queue_after=getattr(self.inner, "queue_s", None))


class NoTrace:
    def add(self, table, rows):
        del table, rows


def run_cell(seed, scheduler, mode, gap_db, cap, downlink, rsus):
    rng = np.random.default_rng(seed)
    devices, radius = int(rng.integers(3, 16)), float(rng.uniform(100, 600))
    scenario = parse_scenario({
        "seed": seed, "simulation": {"rounds": 4, "round_deadline_s": 1e4, "mobility_tick_s": 1.0, "start_s": 0.0},
        "mobility": {"source": "static-disk", "disk": {"devices": devices, "radius_m": radius}},
        "rsu": {"count": rsus, "radius_m": 2 * radius, "bandwidth_hz": float(rng.uniform(2e6, 2e7)),
                "downlink": downlink},
        "channel": {"pathloss": "simple", "reference_loss_db": 30.0, "exponent": float(rng.uniform(2.5, 3.5)),
                    "shadowing_std_db": 0.0, "fading": "rayleigh", "fading_correlation": "round",
                    "snr_gap_db": gap_db, "max_spectral_efficiency": cap},
        "energy": {"battery_j": 1e9},
        "scheduler": {"name": scheduler, **SCHEDULERS[scheduler]},
    })
    env = simpy.Environment(initial_time=0.0)
    mobility = StaticDiskMobility(devices, radius, seed)
    world = World(env, scenario, mobility, place_rsus(scenario.rsu, mobility.bounds()), lambda events: None)
    recorder = Recorder(make_scheduler(scenario.scheduler, stream(seed, "scheduler")))
    federation = FlatFederation(env, scenario, world, StandIn(mode, MODES[mode]), recorder, NoTrace(),
                                lambda summary: None)
    env.process(world.run())
    env.run(until=env.process(federation.run()))
    return recorder.rounds


@pytest.mark.parametrize(("gap_db", "cap"), [(0.0, math.inf), (0.0, 0.5), (3.0, 7.40625)])
@pytest.mark.parametrize("downlink", ["reciprocal", "spread"])
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_realised_air_time_equals_the_plan(scheduler, mode, downlink, gap_db, cap):
    for seed in range(2):
        for r in run_cell(seed, scheduler, mode, gap_db, cap, downlink, rsus=1 + seed % 2):
            obs, plan, feedback = r["obs"], r["plan"], r["feedback"]
            assert feedback.arrived.all()
            planned = plan.planned_air_time_s(obs)
            np.testing.assert_allclose(feedback.participant_air_time_s, planned, rtol=1e-9)
            tau = float(planned.max(initial=0.0))
            assert feedback.air_time_s == pytest.approx(tau, rel=1e-9, abs=1e-12)
            if r["planned"] is not None:  # the seed-001 family's own τ(S), what its objective weighed
                assert r["planned"] == pytest.approx(tau, rel=1e-9, abs=1e-12)
            if r["queue"] is not None:
                assert r["queue_after"] == pytest.approx(max(r["queue"] + tau - TAU_BAR_S, 0.0), rel=1e-9, abs=1e-12)
            if scheduler == "gs":  # the per-round limit holds on the air, not only on paper
                assert feedback.air_time_s <= TAU_BAR_S * (1 + 1e-9)
