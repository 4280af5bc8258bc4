"""The two learning tasks a round can drive: flat federated LoRA (download the adapter, train locally, upload it)
and split federated LoRA (seed 001: upload embeddings, receive encoder features, step the head, upload the gradient
information), and the data set-up they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cosim.compute import ComputeModel
from cosim.federation.task import Task
from cosim.payload import WIRE_BITS, Leg, Payload
from cosim.scenario import LearningConfig, ScenarioError, TaskConfig
from models.aggregate import fedavg, hetlora
from models.backbone import SplitClassifier, load_backbone, lora_rank_problem, lora_width
from models.data import EncodedData, client_shards, encode, load_splits, subset
from models.device import compute_dtype, store_frozen
from models.evaluate import evaluate
from models.flops import frozen_linear_macs
from models.lora import RankProfile, add_lora, rank_profile, trainable_state
from models.soft import OfflinePreset, component_norms, pooled_features, sparse_merge, sparsify
from models.split import SplitExchange, SplitTrainer
from models.trainer import ClientUpdate, LocalTrainer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class LearningSetup:
    """What both modes start from: the LoRA model, the training data cut into client shards, held-out data."""

    model: SplitClassifier
    train: EncodedData
    shards: list[np.ndarray]
    eval_data: EncodedData
    majority_rate: float
    num_labels: int

    @classmethod
    def load(cls, cfg: LearningConfig, seed: int,
             base: tuple[SplitClassifier, PreTrainedTokenizerBase | None] | None = None) -> LearningSetup:
        """`cfg`'s data on `base` (a model from load_base and its tokenizer, shared by several tasks), or on a base
        of its own."""
        train, held_out = load_splits(cfg.dataset)
        model, tokenizer = base or load_base(cfg, train.num_labels, seed)
        chosen, shards = client_shards(train.labels, cfg.clients, cfg.samples_per_client, cfg.partition,
                                       cfg.dirichlet_alpha, seed)
        train = subset(train, chosen)
        held_out = subset(held_out, np.arange(min(cfg.eval_samples, len(held_out.labels))))
        return cls(model, encode(train, tokenizer, cfg.max_length), list(shards),
                   encode(held_out, tokenizer, cfg.max_length),
                   float(np.bincount(held_out.labels).max() / len(held_out.labels)), train.num_labels)


def load_base(cfg: LearningConfig, num_labels: int, seed: int) -> tuple[SplitClassifier,
                                                                       PreTrainedTokenizerBase | None]:
    """The frozen base with LoRA adapters and a `num_labels` head (stored in the compute precision), and its
    tokenizer."""
    model, tokenizer = load_backbone(cfg.model, num_labels=num_labels, seed=seed)
    if rank_problem := lora_rank_problem(cfg.lora_rank, lora_width(model.config)):
        raise ScenarioError("scenario", [rank_problem])
    model = add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                     target_modules=cfg.lora_targets)
    store_frozen(model, compute_dtype(next(model.parameters()).device, cfg.precision))
    return model, tokenizer


def adapter_payload(profile: RankProfile, bits_per_value: int, reciprocal_downlink: bool = False,
                    density: float = 1.0) -> Payload:
    """Flat federated LoRA: the adapter and head down, the same up (at `density` by default: models.soft); a client
    may train any rank up to the global one (it gets the leading components, as in HetLoRA)."""
    adapter = Leg("down", profile.fixed_values, profile.per_rank_values)
    return Payload((adapter, dataclasses.replace(adapter, kind="up")), default_rank=profile.rank,
                   ranks=tuple(range(1, profile.rank + 1)), adapted_modules=profile.adapted_modules,
                   bits_per_value=bits_per_value, reciprocal_downlink=reciprocal_downlink, default_density=density)


def split_payload(exchange: SplitExchange, bits_per_value: int, reciprocal_downlink: bool = False) -> Payload:
    """Split federated LoRA: embeddings up, features down, gradient information (per rank component) up."""
    x = exchange
    legs = (Leg("up", x.embedding_values), Leg("down", x.embedding_values), Leg("up", 0, x.gradient_values_per_rank))
    return Payload(legs, default_rank=x.rank, ranks=(x.rank,), adapted_modules=x.adapted_modules,
                   bits_per_value=bits_per_value, reciprocal_downlink=reciprocal_downlink)


class FederatedTask(Task):
    """Flat federated LoRA: every participant downloads the global adapter and head (truncated to its planned rank),
    trains them locally and uploads them; the server averages what arrived (FedAvg, or HetLoRA's zero-padded average
    when ranks differ). An upload at a density below 1 keeps its top rank components (SOFT, learning.compression);
    a round with any such upload is merged by models.soft.sparse_merge. compression.preset = "covariance" runs
    TSFA's offline stage first (models.soft.OfflinePreset; `preset` holds its inputs and outputs for the manifest)."""

    round_shape = ("down", "compute", "up")

    def __init__(self, cfg: LearningConfig, seed: int, reciprocal_downlink: bool = False,
                 setup: LearningSetup | None = None, trainer: LocalTrainer | None = None) -> None:
        """`setup` and `trainer` are given when several tasks share one base and one trainer (cosim.federation.
        multitask, which trains their clients together and has each task `merge` its own)."""
        setup = setup or LearningSetup.load(cfg, seed)
        super().__init__(cfg, setup.majority_rate)
        self.eval_data = setup.eval_data
        self.model = setup.model
        self.seed = seed
        soft = cfg.compression
        density, lr, self.preset = soft.density, cfg.lr, None
        if soft.preset == "covariance":
            features = pooled_features(setup.model, setup.train, soft.calibration_samples,
                                       compute_dtype(next(setup.model.parameters()).device, cfg.precision))
            self.preset = OfflinePreset.from_features(features, cfg.lora_rank, cfg.lr, cfg.optimizer == "sgd")
            density, lr = self.preset.density, self.preset.lr
        self.trainer = trainer or LocalTrainer(setup.model, setup.train, setup.shards, batch_size=cfg.batch_size,
                                               lr=lr, optimizer=cfg.optimizer, seed=seed, precision=cfg.precision,
                                               orthogonal_weight=soft.orthogonal_weight)
        self.global_state = trainable_state(setup.model)
        self.edge_states: dict[int, dict[str, torch.Tensor]] = {}  # hierarchical: RSU -> edge model, where it differs
        self.edge_samples: dict[int, int] = {}  # RSU -> samples averaged into its edge model since the global round
        self.update_norms: list[np.ndarray] = []
        profile = rank_profile(self.global_state)
        self.payload = adapter_payload(profile, WIRE_BITS[cfg.wire_dtype], reciprocal_downlink, density)
        self.compute_samples = cfg.local_steps * cfg.batch_size
        self.compute_model = ComputeModel.from_layers(frozen_linear_macs(setup.model.encoder),
                                                      profile.per_rank_values, profile.rank)

    def train(self, clients: list[int], round_index: int, ranks: list[int], densities: list[float] | None = None,
              edges: list[int] | None = None) -> np.ndarray:
        """Local training of the clients whose uploads arrived, then the averages; returns each one's training loss.
        Flat (`edges` None): every client starts from the global model. Hierarchical: a client starts from the edge
        model of the RSU its update reached (`edges`); see merge."""
        if not clients:
            self.update_norms = []
            return np.zeros(0)
        updates = self.trainer.train(self.starts(edges), clients, self.cfg.local_steps, round_index,
                                     ranks=self.trained_ranks(ranks))
        return self.merge(updates, round_index, ranks, densities, edges)

    def starts(self, edges: list[int] | None) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """What the clients download: the global model (flat), or each one its RSU's edge model (`edges`)."""
        return self.global_state if edges is None else [self.start(edge) for edge in edges]

    def start(self, edge: int | None) -> dict[str, torch.Tensor]:
        """What one client downloads: its RSU's edge model (hierarchical, once that RSU has learnt since the last
        global round), else the global model."""
        return self.global_state if edge is None else self.edge_states.get(edge, self.global_state)

    def trained_ranks(self, ranks: list[int]) -> list[int] | None:
        """What LocalTrainer.train takes: the ranks if they differ from the global one, else None (FedAvg)."""
        return ranks if any(rank != self.payload.default_rank for rank in ranks) else None

    def merge(self, updates: list[ClientUpdate], round_index: int, ranks: list[int],
              densities: list[float] | None = None, edges: list[int] | None = None) -> np.ndarray:
        """The server's side of the clients' updates (aligned with `ranks`, `densities` and `edges`): flat, they are
        averaged into the global model; hierarchical, each RSU averages the updates that reached it into its edge
        model (aggregate_edges later makes the global model from the edges). Each update's loss."""
        if edges is None:
            self.global_state = self._average(self.global_state, updates, round_index, ranks, densities)
        else:
            for edge in sorted(set(edges)):
                members = [k for k, reached in enumerate(edges) if reached == edge]
                self.edge_states[edge] = self._average(
                    self.edge_states.get(edge, self.global_state), [updates[k] for k in members], round_index,
                    [ranks[k] for k in members], None if densities is None else [densities[k] for k in members])
                self.edge_samples[edge] = self.edge_samples.get(edge, 0) + sum(updates[k].num_samples for k in members)
        self.update_norms = [component_norms(update.state) for update in updates]
        return np.array([update.loss for update in updates])

    def _average(self, start: dict[str, torch.Tensor], updates: list[ClientUpdate], round_index: int,
                 ranks: list[int], densities: list[float] | None) -> dict[str, torch.Tensor]:
        """`updates` of clients that started from `start`, averaged: FedAvg, HetLoRA's padding when ranks differ,
        SOFT's sparse merge when some upload is sparse."""
        top = self.payload.default_rank
        heterogeneous = any(rank != top for rank in ranks)
        kept = self.payload.kept_components(ranks, densities)
        if np.all(kept == ranks):
            merged = hetlora(updates, top) if heterogeneous else fedavg(updates)
        else:
            selection = self.cfg.compression.selection
            merged = sparse_merge(start, [
                sparsify(u.client, u.num_samples, u.state, int(k), selection,
                         np.random.default_rng([self.seed, round_index, u.client]))
                for u, k in zip(updates, kept, strict=True)])
        return merged

    def aggregate_edges(self) -> None:
        """The server's global round: the new global model is the average of the edge models that learnt since the
        last global round, each weighted by the training samples its RSU aggregated since then (FedAvg over edges);
        every RSU then holds the global model again."""
        if self.edge_samples:
            self.global_state = fedavg([ClientUpdate(rsu, self.edge_states[rsu], weight, float("nan"))
                                        for rsu, weight in sorted(self.edge_samples.items())])
        self.edge_states, self.edge_samples = {}, {}

    def samples(self, clients: list[int]) -> list[int]:
        """Each client's training samples (its shard): its FedAvg weight."""
        return [len(self.trainer.shards[client]) for client in clients]

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.model, self.global_state, self.eval_data, dtype=self.trainer.dtype)

    def state_dict(self) -> dict[str, Any]:
        """The learning state between rounds (local optimisers start afresh every round): for a checkpoint."""
        return {"global_state": self.global_state, "edge_states": self.edge_states, "edge_samples": self.edge_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_state = dict(state["global_state"])
        self.edge_states = {int(rsu): dict(edge) for rsu, edge in state["edge_states"].items()}
        self.edge_samples = {int(rsu): int(samples) for rsu, samples in state["edge_samples"].items()}


class SplitTask(Task):
    """Split federated LoRA (seed 001): embedding and head on the vehicle, LoRA encoder on the server.

    A participant's round: upload its embedded mini-batch, receive the encoder features, run its head forward and
    backward (the vehicle's only computation: one mini-batch), upload the gradient information. The payload is the
    paper's L_k = embeddings + features + gradient information (models.split.SplitExchange); which of it a plan
    carries at the vehicle's rate follows rsu.downlink (see cosim.payload)."""

    round_shape = ("up", "down", "compute", "up")

    def __init__(self, cfg: LearningConfig, seed: int, reciprocal_downlink: bool = False) -> None:
        setup = LearningSetup.load(cfg, seed)
        super().__init__(cfg, setup.majority_rate)
        self.eval_data = setup.eval_data
        self.trainer = SplitTrainer(setup.model, setup.train, setup.shards, batch_size=cfg.batch_size,
                                    server_lr=cfg.server_lr, head_lr=cfg.head_lr, seed=seed,
                                    server_optimizer=cfg.server_optimizer, precision=cfg.precision)
        self.payload = split_payload(self.trainer.exchange, WIRE_BITS[cfg.wire_dtype], reciprocal_downlink)
        self.compute_samples = cfg.batch_size

    def train(self, clients: list[int], round_index: int, ranks: list[int], densities: list[float] | None = None,
              edges: list[int] | None = None) -> float:
        """One split step over the clients whose exchanges all completed (the server's one rank: `ranks` is the
        payload's default for all; uploads are dense: compression and tsfa are flat-only; aggregation is flat, so
        `edges` is None). Vehicles that share a shard draw the same batch in a round (it is seeded by shard and
        round), so that batch counts once."""
        del ranks, densities, edges
        return self.trainer.round(list(dict.fromkeys(clients)), round_index)

    def evaluate(self) -> tuple[float, float]:
        return self.trainer.evaluate(self.eval_data)

    def state_dict(self) -> dict[str, Any]:
        """The learning state between rounds: for a checkpoint."""
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)


def make_task(cfg: LearningConfig, seed: int, reciprocal_downlink: bool = False,
              tasks: list[TaskConfig] | None = None) -> Task:
    """The scenario's learning task, by `learning.mode`, or several at once (`tasks`, the scenario's [[tasks]]);
    `reciprocal_downlink` is rsu.downlink == "reciprocal"."""
    if tasks:
        from cosim.federation.multitask import MultiTask  # it builds on FederatedTask

        return MultiTask(cfg, tasks, seed, reciprocal_downlink)
    return (SplitTask if cfg.mode == "split" else FederatedTask)(cfg, seed, reciprocal_downlink)
