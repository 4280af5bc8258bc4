"""Federated rounds on the SimPy clock: each participant runs its task's phases (transfers and local computation)
against the round deadline; the server learns from exactly the participants whose phases all completed.

Two learning tasks share that round process: flat federated LoRA (download the adapter, train locally, upload it) and
split federated LoRA (seed 001: upload embeddings, receive encoder features, step the head, upload feature
gradients)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import simpy

from cosim.radio import Link, TransferResult, transfer
from cosim.scenario import LearningConfig, Scenario, ScenarioError
from cosim.schedulers import Observation, Plan, RoundFeedback, Scheduler
from cosim.trace import TraceWriter
from cosim.world import World
from models.aggregate import fedavg
from models.backbone import SplitClassifier, load_backbone
from models.data import EncodedData, encode, load_dataset, partition_dirichlet, partition_iid, subset
from models.device import compute_dtype, store_frozen
from models.evaluate import evaluate
from models.lora import add_lora, trainable_state, upload_bits
from models.split import SplitTrainer
from models.trainer import LocalTrainer


@dataclass(frozen=True)
class LearningSetup:
    """What both modes start from: the LoRA model, the training data cut into client shards, held-out data."""

    model: SplitClassifier
    train: EncodedData
    shards: list[np.ndarray]
    eval_data: EncodedData
    majority_rate: float

    @classmethod
    def load(cls, cfg: LearningConfig, seed: int) -> LearningSetup:
        model, tokenizer = load_backbone(cfg.model, num_labels=2, seed=seed)
        model = add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         target_modules=cfg.lora_targets)
        store_frozen(model, compute_dtype(next(model.parameters()).device, cfg.precision))
        rng = np.random.default_rng(seed)
        train = load_dataset(cfg.dataset, "train")
        wanted = cfg.clients * cfg.samples_per_client
        if wanted > len(train.labels):
            raise ScenarioError("scenario", [f"learning.clients × learning.samples_per_client = {wanted} exceeds the "
                                             f"{len(train.labels)} training samples of {cfg.dataset}; lower either"])
        train = subset(train, rng.permutation(len(train.labels))[:wanted])
        if cfg.partition == "iid":
            shards = partition_iid(wanted, cfg.clients, rng)
        else:
            shards = partition_dirichlet(train.labels, cfg.clients, cfg.dirichlet_alpha, rng)
        held_out = load_dataset(cfg.dataset, "dev")
        held_out = subset(held_out, np.arange(min(cfg.eval_samples, len(held_out.labels))))
        return cls(model, encode(train, tokenizer, cfg.max_length), list(shards),
                   encode(held_out, tokenizer, cfg.max_length),
                   float(np.bincount(held_out.labels).max() / len(held_out.labels)))


class _Task(ABC):
    """The duck-typed interface the round process drives: phases, client mapping, train, evaluate.

    `payload_bits` is L_k of seed 001's delay model τ = max_k L_k/R_k: the bits a scheduler charges to a vehicle's
    scheduled share when it plans a round."""

    payload_bits: int

    def __init__(self, cfg: LearningConfig, setup: LearningSetup) -> None:
        self.cfg = cfg
        self.shard_sizes = np.array([len(shard) for shard in setup.shards])
        self.eval_data = setup.eval_data
        self.majority_rate = setup.majority_rate

    @abstractmethod
    def phases(self) -> list[Phase]:
        """One participant's round, in order."""

    @abstractmethod
    def train(self, clients: list[int], round_index: int) -> float:
        """Learn from the clients whose phases all completed; their mean training loss (NaN if none)."""

    @abstractmethod
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, loss) of the current global model on the held-out data."""

    @property
    def upload_bits(self) -> int:
        return sum(p.bits for p in self.phases() if p.kind == "up")

    @property
    def download_bits(self) -> int:
        return sum(p.bits for p in self.phases() if p.kind == "down")

    def client_of(self, slot: np.ndarray) -> np.ndarray:
        """Vehicle slot -> data shard: vehicles beyond `clients` reuse shards in turn."""
        return slot % self.cfg.clients


class FederatedTask(_Task):
    """Flat federated LoRA: every participant trains the global adapter and head locally, the server averages them.
    The scheduler's payload is the adapter upload (the download comes before the scheduled uplink)."""

    def __init__(self, cfg: LearningConfig, seed: int) -> None:
        setup = LearningSetup.load(cfg, seed)
        super().__init__(cfg, setup)
        self.model = setup.model
        self.trainer = LocalTrainer(setup.model, setup.train, setup.shards, batch_size=cfg.batch_size, lr=cfg.lr,
                                    optimizer=cfg.optimizer, seed=seed, precision=cfg.precision)
        self.global_state = trainable_state(setup.model)
        self.adapter_bits = upload_bits(self.global_state)
        self.payload_bits = self.adapter_bits

    def phases(self) -> list[Phase]:
        """Download the global adapter and head, train locally, upload them."""
        samples = self.cfg.local_steps * self.cfg.batch_size
        return [Phase("down", bits=self.adapter_bits), Phase("compute", samples=samples),
                Phase("up", bits=self.adapter_bits)]

    def train(self, clients: list[int], round_index: int) -> float:
        """Local training of the clients whose uploads arrived, then FedAvg; returns their mean training loss."""
        if not clients:
            return float("nan")
        updates = self.trainer.train(self.global_state, clients, self.cfg.local_steps, round_index)
        self.global_state = fedavg(updates)
        return float(np.mean([update.loss for update in updates]))

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.model, self.global_state, self.eval_data, dtype=self.trainer.dtype)

    def state_dict(self) -> dict[str, Any]:
        """The learning state between rounds (local optimisers start afresh every round): for a checkpoint."""
        return {"global_state": self.global_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_state = dict(state["global_state"])


class SplitTask(_Task):
    """Split federated LoRA (seed 001): embedding and head on the vehicle, LoRA encoder on the server.

    A participant's round: upload its embedded mini-batch, receive the encoder features, run its head forward and
    backward (the vehicle's only computation: one mini-batch), upload the feature gradients. The scheduler's payload
    is the paper's L_k = embeddings + features + gradients, all three on the vehicle's scheduled share; the round
    itself carries the features on the downlink at the RSU's rate, and the traces keep both directions apart."""

    def __init__(self, cfg: LearningConfig, seed: int) -> None:
        setup = LearningSetup.load(cfg, seed)
        super().__init__(cfg, setup)
        self.trainer = SplitTrainer(setup.model, setup.train, setup.shards, batch_size=cfg.batch_size,
                                    server_lr=cfg.server_lr, head_lr=cfg.head_lr, seed=seed,
                                    server_optimizer=cfg.server_optimizer, precision=cfg.precision)
        self.payload = self.trainer.payload
        self.payload_bits = self.payload.uplink + self.payload.downlink

    def phases(self) -> list[Phase]:
        p = self.payload
        return [Phase("up", bits=p.embeddings_up), Phase("down", bits=p.features_down),
                Phase("compute", samples=self.cfg.batch_size), Phase("up", bits=p.gradients_up)]

    def train(self, clients: list[int], round_index: int) -> float:
        """One split step over the clients whose exchanges all completed. Vehicles that share a shard draw the same
        batch in a round (it is seeded by shard and round), so that batch counts once."""
        return self.trainer.round(list(dict.fromkeys(clients)), round_index)

    def evaluate(self) -> tuple[float, float]:
        return self.trainer.evaluate(self.eval_data)

    def state_dict(self) -> dict[str, Any]:
        """The learning state between rounds: for a checkpoint."""
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)


def make_task(cfg: LearningConfig, seed: int) -> FederatedTask | SplitTask:
    """The scenario's learning task, by `learning.mode`."""
    return (SplitTask if cfg.mode == "split" else FederatedTask)(cfg, seed)


@dataclass(frozen=True)
class Phase:
    """One step of a participant's round: a transfer of `bits` ("down" or "up") or `samples`' worth of local
    computation on the vehicle ("compute")."""

    kind: Literal["down", "compute", "up"]
    bits: int = 0
    samples: float = 0.0


@dataclass(frozen=True)
class RoundSummary:
    round_index: int
    time_s: float
    participants: int
    arrivals: int
    accuracy: float | None


class FlatFederation:
    """Vehicles → serving RSU → server (RSUs reach the server over an ideal backhaul)."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, world: World, task: FederatedTask | SplitTask,
                 scheduler: Scheduler, trace: TraceWriter, on_round: Callable[[RoundSummary], None]) -> None:
        self.env = env
        self.sim = scenario.simulation
        self.device = world.device
        self.rsu_config = scenario.rsu
        self.world = world
        self.task = task
        self.scheduler = scheduler
        self.trace = trace
        self.on_round = on_round
        phases = task.phases()
        self.compute_time_s = float(sum(self.device.compute_time_s(p.samples) for p in phases))
        self.upload_bits = sum(p.bits for p in phases if p.kind == "up")
        self.download_bits = sum(p.bits for p in phases if p.kind == "down")
        self.payload_bits = task.payload_bits

    def run(self) -> Generator[simpy.Event, object, None]:
        yield self.world.next_tick()  # the first mobility refresh: until then nobody is associated
        for round_index in range(self.sim.rounds):
            yield from self.round(round_index)

    def observe(self, round_index: int) -> tuple[Observation, np.ndarray]:
        w = self.world
        rows = np.flatnonzero(w.can_transmit())
        n = len(rows)
        obs = Observation(
            round_index=round_index, time_s=self.env.now, vehicles=w.ids[rows], rsu=w.serving[rows],
            distance_m=w.distance_m[rows], gain=w.gain[rows], speed_mps=w.snapshot.speed_mps[rows],
            dwell_s=w.dwell_s[rows],
            battery_j=w.battery_j[rows], tx_power_w=np.full(n, self.device.tx_power_w),
            compute_time_s=np.full(n, self.compute_time_s), rsu_bandwidth_hz=w.rsus.bandwidth_hz,
            noise_psd_w_per_hz=w.noise_psd, upload_bits=self.upload_bits,
            download_bits=self.download_bits, payload_bits=self.payload_bits, deadline_s=self.sim.round_deadline_s,
        )
        return obs, w.slot[rows]

    def round(self, round_index: int) -> Generator[simpy.Event, object, None]:
        start = self.env.now
        self.world.begin_round()
        obs, slots = self.observe(round_index)
        plan = self.scheduler.plan(obs)
        deadline_at = start + self.sim.round_deadline_s
        processes = [self.env.process(self.participate(obs, plan, j, int(slots[i]), deadline_at))
                     for j, i in enumerate(plan.participants)]
        if processes:
            yield self.env.all_of(processes)
        else:
            yield self.env.timeout(self.world.tick_s)  # nobody to schedule: wait for the traffic to change
        records = [process.value for process in processes]
        end = self.env.now  # the last participant's upload arrived or failed (at the latest at the deadline)
        arrived = np.array([r["outcome"] == "arrived" for r in records], dtype=bool)
        clients = [r["client"] for r in records if r["outcome"] == "arrived"]
        train_loss = self.task.train(clients, round_index)
        evaluate_now = (round_index + 1) % self.task.cfg.eval_every == 0 or round_index + 1 == self.sim.rounds
        accuracy, loss = self.task.evaluate() if evaluate_now else (float("nan"), float("nan"))
        energy = np.array([r["energy_j"] for r in records])
        air_time = max((r["download_s"] + r["upload_delay_s"] for r in records), default=0.0)
        self.scheduler.observe(RoundFeedback(round_index, end - start, air_time, arrived, energy,
                                             accuracy if evaluate_now else None))
        self.trace.add("participants", records)
        self.trace.add("rounds", [{
            "round": round_index, "start_s": start, "end_s": end, "duration_s": end - start,
            "candidates": obs.count, "participants": len(records), "arrivals": int(arrived.sum()),
            "drops": int((~arrived).sum()), "upload_bytes": int(arrived.sum()) * self.upload_bits // 8,
            "download_bytes": len(records) * self.download_bits // 8, "energy_j": float(energy.sum()),
            "train_loss": train_loss, "accuracy": accuracy, "loss": loss,
        }])
        self.on_round(RoundSummary(round_index, end, len(records), int(arrived.sum()),
                                   accuracy if evaluate_now else None))

    def participate(self, obs: Observation, plan: Plan, j: int, slot: int,
                    deadline_at: float) -> Generator[simpy.Event, object, dict[str, Any]]:
        """One vehicle's round: the task's phases in order (transfers and local computation); the first failure ends
        it, and the energy spent until then is spent regardless."""
        env, world = self.env, self.world
        i = int(plan.participants[j])
        vehicle, rsu, bandwidth = str(obs.vehicles[i]), int(obs.rsu[i]), float(plan.bandwidth_hz[j])
        power = float(obs.tx_power_w[i])
        # Downlink on the same FDMA share (see RsuConfig.downlink for its power).
        down_power = power if self.rsu_config.downlink == "reciprocal" else (
            self.rsu_config.tx_power_w * bandwidth / float(obs.rsu_bandwidth_hz[rsu]))
        links = {"up": world.link(vehicle, rsu, bandwidth, power),
                 "down": world.link(vehicle, rsu, bandwidth, down_power)}
        record: dict[str, Any] = {
            "round": obs.round_index, "vehicle": vehicle, "client": int(self.task.client_of(np.array(slot))),
            "rsu": rsu, "distance_m": float(obs.distance_m[i]), "gain_db": float(10 * np.log10(obs.gain[i])),
            "rate_bps": world.rate_bps(bandwidth, power, float(obs.gain[i])), "bandwidth_hz": bandwidth,
            "download_bits": obs.download_bits, "upload_bits": obs.upload_bits,
            "download_s": 0.0, "compute_time_s": 0.0, "upload_delay_s": 0.0,
            "compute_energy_j": 0.0, "transmit_energy_j": 0.0,
        }
        record.update(dict.fromkeys(("download_start_s", "download_end_s", "compute_start_s", "compute_end_s",
                                     "upload_start_s", "upload_end_s"), float("nan")))
        outcome = "arrived"
        for phase in self.task.phases():
            column = {"down": "download", "up": "upload", "compute": "compute"}[phase.kind]
            if math.isnan(record[f"{column}_start_s"]):
                record[f"{column}_start_s"] = env.now
            if phase.kind == "compute":
                outcome = yield from self._compute(phase.samples, slot, deadline_at, record)
            else:
                outcome = yield from self._transfer(phase.bits, links[phase.kind], power if phase.kind == "up" else 0.0,
                                                    slot, deadline_at, record, column)
            record[f"{column}_end_s"] = env.now
            if outcome != "arrived":
                break
        busy_s = record["compute_time_s"] + record["upload_delay_s"]
        idle = world.batteries.drain(slot, self.device.idle_power_w * (env.now - obs.time_s - busy_s))
        record["idle_energy_j"] = float(idle[0])
        record["energy_j"] = record["compute_energy_j"] + record["transmit_energy_j"] + record["idle_energy_j"]
        record["battery_j"] = float(world.batteries.level_j[slot])
        record["outcome"] = outcome
        return record

    def _compute(self, samples: float, slot: int, deadline_at: float,
                 record: dict[str, Any]) -> Generator[simpy.Event, object, str]:
        """Local computation: stops at the deadline or when the battery is empty, whichever comes first."""
        needed_s = float(self.device.compute_time_s(samples))
        draw_w = self.device.compute_power_w
        battery = float(self.world.batteries.level_j[slot])
        busy = min(needed_s, deadline_at - self.env.now, battery / draw_w)
        spent = battery if busy == battery / draw_w else busy * draw_w  # empty means exactly empty
        yield self.env.timeout(busy)
        self.world.batteries.drain(slot, spent)
        record["compute_time_s"] += busy
        record["compute_energy_j"] += spent
        if busy < needed_s:
            return "deadline" if self.env.now >= deadline_at else "battery"
        return "arrived"

    def _transfer(self, bits: int, link: Link, power_w: float, slot: int, deadline_at: float, record: dict[str, Any],
                  column: str) -> Generator[simpy.Event, object, str]:
        """A transfer that must finish by the deadline; an upload also stops when the battery runs out."""
        limit, reason = deadline_at - self.env.now, "deadline"
        battery = float(self.world.batteries.level_j[slot])
        if power_w > 0 and battery / power_w < limit:
            limit, reason = battery / power_w, "battery"
        result: TransferResult = yield from transfer(self.env, bits, link, limit, reason)
        spent = battery if result.outcome == "battery" else power_w * result.duration_s
        self.world.batteries.drain(slot, spent)
        record["transmit_energy_j"] += spent
        record["download_s" if column == "download" else "upload_delay_s"] += result.duration_s
        return result.outcome
