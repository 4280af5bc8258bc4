"""Hierarchical federated rounds, vehicles → serving RSU → server (seed 000): every round each RSU averages the
updates that reached it into its own edge model; every κ rounds the server averages the edge models into the global
model over a modelled RSU–server backhaul, on the same clock.

A round runs as a flat one (cosim.federation.flat), except where the learning goes:
- A participant downloads its serving RSU's edge model (the global model until that RSU has aggregated something
  since the last global round), trains from it and uploads to that RSU. The bits on the radio are the flat ones.
- Handover rule: an update is lost when its vehicle is no longer served by the RSU it downloaded from when it
  uploads (that RSU scheduled its uplink share, and holds the model it trained from; the new RSU has no share for
  it). The participant's `outcome` is "handover" (with `upload_delay_s` 0 when it handed over between download and
  upload); its update reaches no edge model.
- Edge round (every round): each RSU that received updates averages them into its edge model, as the flat server
  does (FedAvg weighted by samples; HetLoRA zero-padding when ranks differ; SOFT's sparse merge when an upload is
  sparse): FederatedTask.train with `edges`.
- Global round (rounds κ, 2κ, ..., and the last round): the RSUs that received updates since the last global round
  send their edge models to the server over their own backhaul link (in parallel), the server averages them weighted
  by the samples each aggregated since then, and sends the global model back to every RSU. Each leg takes
  `backhaul_latency_s` + bits / `backhaul_rate_bps`, the bits those of a dense adapter at the task's rank
  (cosim.payload), one per task with several tasks (each task aggregates its own edge models); the round ends
  when every RSU holds the global model. No RSU with updates: no global round.
- Accuracy is the server's global model's: at an evaluation round between global rounds, the last global one.

Every aggregation is a row of the `aggregations` table: level "edge" (rsu, contributing vehicles, their samples and
upload bits) or "global" (rsu −1, contributing RSUs, their samples, the backhaul bits both ways, backhaul_s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from cosim.federation.flat import FlatFederation, RoundSummary
from cosim.federation.task import Task
from cosim.scenario import Scenario
from cosim.schedulers import Scheduler
from cosim.trace import TraceWriter
from cosim.world import World


class HierarchicalFederation(FlatFederation):
    """Vehicles → serving RSU (edge model) → server (global model every `federation.global_every_rounds` rounds);
    see the module doc. The task must be a FederatedTask or a MultiTask (`edges`, `samples`, `aggregate_edges`)."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, world: World, task: Task, scheduler: Scheduler,
                 trace: TraceWriter, on_round: Callable[[RoundSummary], None]) -> None:
        super().__init__(env, scenario, world, task, scheduler, trace, on_round)
        self.config = scenario.federation
        self.pending: dict[int, int] = {}  # RSU -> samples it aggregated since the last global round

    def learn(self, done: list[dict[str, Any]], round_index: int) -> tuple[np.ndarray | float, float]:
        clients, edges = [r["client"] for r in done], [r["rsu"] for r in done]
        losses = self.task.train(clients, round_index, [r["rank"] for r in done], [r["density"] for r in done],
                                 edges=edges)
        now = self.env.now
        samples = self.task.samples(clients)
        rows = []
        for rsu in sorted(set(edges)):
            members = [k for k, reached in enumerate(edges) if reached == rsu]
            got = sum(samples[k] for k in members)
            self.pending[rsu] = self.pending.get(rsu, 0) + got
            rows.append(self._row(round_index, "edge", rsu, len(members), got,
                                  sum(done[k]["upload_bits"] for k in members), 0.0, now))
        backhaul_s = 0.0
        due = (round_index + 1) % self.config.global_every_rounds == 0 or round_index + 1 == self.sim.rounds
        if due and self.pending:
            models = len(self.task.names)  # several tasks: each RSU holds (and the server sends) one model per task
            up = models * int(self.task.payload.upload_bits(density=1.0))
            down = models * int(self.task.payload.download_bits())
            backhaul_s = self.leg_s(up) + self.leg_s(down)
            self.task.aggregate_edges()
            rows.append(self._row(round_index, "global", -1, len(self.pending), sum(self.pending.values()),
                                  up * len(self.pending) + down * self.world.rsus.count, backhaul_s, now))
            self.pending = {}
        self.trace.add("aggregations", rows)
        return losses, backhaul_s

    def leg_s(self, bits: int) -> float:
        """One backhaul transfer: latency plus bits over the link's rate (every RSU has its own link)."""
        return self.config.backhaul_latency_s + bits / self.config.backhaul_rate_bps

    @staticmethod
    def _row(round_index: int, level: str, rsu: int, contributors: int, samples: int, bits: int, backhaul_s: float,
             start_s: float) -> dict[str, Any]:
        return {"round": round_index, "level": level, "rsu": rsu, "contributors": contributors, "samples": samples,
                "bits": bits, "backhaul_s": backhaul_s, "start_s": start_s, "end_s": start_s + backhaul_s}
