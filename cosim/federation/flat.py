"""Federated rounds on the SimPy clock, vehicles → serving RSU → server: observe, plan, run every participant's
phases against the round deadline, and let the server learn from exactly the participants whose phases all
completed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from cosim.budget import TaskBudgets
from cosim.federation.participant import Participant
from cosim.federation.task import Task
from cosim.scenario import Scenario
from cosim.schedulers import Observation, RoundFeedback, Scheduler
from cosim.trace import TraceWriter
from cosim.world import World


@dataclass(frozen=True)
class RoundSummary:
    round_index: int
    time_s: float
    participants: int
    arrivals: int
    accuracy: float | None


class FlatFederation:
    """Vehicles → serving RSU → server (RSUs reach the server over an ideal backhaul)."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, world: World, task: Task,
                 scheduler: Scheduler, trace: TraceWriter, on_round: Callable[[RoundSummary], None]) -> None:
        self.env = env
        self.sim = scenario.simulation
        self.device = world.device
        self.world = world
        self.task = task
        self.scheduler = scheduler
        self.trace = trace
        self.on_round = on_round
        self.participant = Participant(env, world, task, scenario.rsu)
        # What a plan covers depends on the radio: the downlink counts when it runs at the vehicle's rate.
        self.payload = dataclasses.replace(task.payload, reciprocal_downlink=scenario.rsu.downlink == "reciprocal")
        self.compute_time_s = float(self.device.compute_time_s(task.compute_samples))
        self.budgets = None if scenario.energy_budget is None else TaskBudgets(
            scenario.energy_budget, [t.budget_weight for t in scenario.tasks] or [1.0])
        self.client_budget_j = np.full(len(task.names), np.nan)  # each task's, this round
        if task.preset is not None:  # TSFA's offline stage: its inputs and outputs (models.soft.OfflinePreset)
            trace.manifest["offline_preset"] = dataclasses.asdict(task.preset)

    def run(self) -> Generator[simpy.Event, object, None]:
        yield self.world.next_tick()  # the first mobility refresh: until then nobody is associated
        for round_index in range(self.sim.rounds):
            yield from self.round(round_index)

    def learn(self, done: list[dict[str, Any]], round_index: int) -> tuple[np.ndarray | float, float]:
        """The server learns from the updates that arrived (`done`: their participant records): each one's training
        loss, and the backhaul time this adds to the round (none: the RSUs forward updates over an ideal backhaul)."""
        return self.task.train([r["client"] for r in done], round_index, [r["rank"] for r in done],
                               [r["density"] for r in done]), 0.0

    def component_norms(self, records: list[dict[str, Any]], done: list[dict[str, Any]],
                        round_index: int) -> list[np.ndarray | None] | None:
        """The arrived updates' component norms, aligned with `records` (None where nothing arrived), traced in the
        `components` table; None if the task has none."""
        norms = self.task.update_norms
        if norms is None:
            return None
        self.trace.add("components", [
            {"round": round_index, "vehicle": record["vehicle"], "component": i, "a_norm": a, "b_norm": b}
            for record, update in zip(done, norms, strict=True) for i, (a, b) in enumerate(update.tolist())])
        by_vehicle = dict(zip((record["vehicle"] for record in done), norms, strict=True))
        return [by_vehicle.get(record["vehicle"]) if record["outcome"] == "arrived" else None for record in records]

    def observe(self, round_index: int) -> tuple[Observation, np.ndarray]:
        w = self.world
        rows = np.flatnonzero(w.can_transmit())
        n = len(rows)
        task = self.task.task_of(self.task.client_of(w.slot[rows]))
        if self.budgets is not None:
            self.client_budget_j = self.budgets.client_budget_j(task)
        obs = Observation(
            round_index=round_index, time_s=self.env.now, vehicles=w.ids[rows], rsu=w.serving[rows],
            distance_m=w.distance_m[rows], gain=w.gain[rows], speed_mps=w.snapshot.speed_mps[rows],
            dwell_s=w.dwell_s[rows], battery_j=w.battery_j[rows], tx_power_w=np.full(n, self.device.tx_power_w),
            compute_time_s=np.full(n, self.compute_time_s), rsu_bandwidth_hz=w.rsus.bandwidth_hz, rate=w.rate,
            payload=self.payload, deadline_s=self.sim.round_deadline_s, compute=self.task.compute_model, task=task,
            budget_j=None if self.budgets is None else self.client_budget_j[task],
        )
        return obs, w.slot[rows]

    def round(self, round_index: int) -> Generator[simpy.Event, object, None]:
        start = self.env.now
        self.world.begin_round()
        obs, slots = self.observe(round_index)
        plan = self.scheduler.plan(obs)
        deadline_at = start + self.sim.round_deadline_s
        processes = [self.env.process(self.participant.run(obs, plan, j, int(slots[i]), deadline_at))
                     for j, i in enumerate(plan.participants)]
        if processes:
            yield self.env.all_of(processes)
        else:
            yield self.env.timeout(self.world.tick_s)  # nobody scheduled: wait for the traffic to change
        records = [process.value for process in processes]
        arrived = np.array([r["outcome"] == "arrived" for r in records], dtype=bool)
        done = [r for r in records if r["outcome"] == "arrived"]
        losses, backhaul_s = self.learn(done, round_index)
        if backhaul_s > 0:
            yield self.env.timeout(backhaul_s)
        end = self.env.now  # the last upload arrived or failed (at the latest at the deadline), plus any backhaul
        train_loss = np.full(len(records), np.nan)
        train_loss[arrived] = np.broadcast_to(np.asarray(losses, dtype=float), (len(done),))
        for record, loss in zip(records, train_loss, strict=True):
            record["train_loss"] = float(loss)
        evaluate_now = (round_index + 1) % self.task.cfg.eval_every == 0 or round_index + 1 == self.sim.rounds
        per_task = self.task.evaluate_tasks() if evaluate_now else np.full((len(self.task.names), 2), np.nan)
        accuracy, loss = (float(value) for value in per_task.mean(axis=0))  # every task weighs the same
        energy = np.array([r["energy_j"] for r in records])
        task = self.task.task_of(np.array([r["client"] for r in records], dtype=np.int64))
        self.trace_tasks(round_index, task, arrived, energy, per_task, train_loss)
        if self.budgets is not None:
            self.budgets.record(task, energy, per_task[:, 0] if evaluate_now else None)
        air_time = np.array([r["scheduled_air_time_s"] for r in records])
        self.scheduler.observe(RoundFeedback(round_index, end - start, float(air_time.max(initial=0.0)), arrived,
                                             energy, accuracy if evaluate_now else None, air_time, train_loss,
                                             self.component_norms(records, done, round_index)))
        self.trace.add("participants", records)
        self.trace.add("rounds", [{
            "round": round_index, "start_s": start, "end_s": end, "duration_s": end - start,
            "candidates": obs.count, "participants": len(records), "arrivals": int(arrived.sum()),
            "drops": int((~arrived).sum()), "upload_bytes": sum(r["upload_bits"] for r in done) // 8,
            "download_bytes": sum(r["download_bits"] for r in records) // 8, "energy_j": float(energy.sum()),
            "train_loss": float(train_loss[arrived].mean()) if done else float("nan"), "accuracy": accuracy,
            "loss": loss,
        }])
        self.on_round(RoundSummary(round_index, end, len(records), int(arrived.sum()),
                                   accuracy if evaluate_now else None))

    def trace_tasks(self, round_index: int, task: np.ndarray, arrived: np.ndarray, energy: np.ndarray,
                    per_task: np.ndarray, train_loss: np.ndarray) -> None:
        """One `tasks` row per task: its participants' count, arrivals, energy and training loss (`task`, `arrived`,
        `energy` and `train_loss` are aligned with the participants), its held-out accuracy and loss, and the budget
        it had this round (NaN without [energy_budget])."""
        share, round_j = (np.full(len(self.task.names), np.nan),) * 2 if self.budgets is None else (
            self.budgets.share, self.budgets.round_budget_j)
        rows = []
        for index, name in enumerate(self.task.names):
            mine = task == index
            done = mine & arrived
            rows.append({
                "round": round_index, "task": name, "participants": int(mine.sum()), "arrivals": int(done.sum()),
                "energy_j": float(energy[mine].sum()),
                "train_loss": float(train_loss[done].mean()) if done.any() else float("nan"),
                "accuracy": float(per_task[index, 0]), "loss": float(per_task[index, 1]),
                "budget_share": float(share[index]), "budget_j": float(round_j[index]),
                "client_budget_j": float(self.client_budget_j[index]),
            })
        self.trace.add("tasks", rows)
