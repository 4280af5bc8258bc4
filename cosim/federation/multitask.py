"""Several fine-tuning tasks at once on one frozen base (seed 000's multi-task federation, `[[tasks]]`).

The base is loaded once; every task has its own LoRA adapters and head (its own global state), its own data, client
shards and held-out set, and is evaluated on its own. Vehicles belong to tasks by their slot: the tasks' client
counts are laid end to end (task 0's clients, then task 1's, ...) and slot s is client s mod Σ clients, the task
that holds that client (so with one task it is today's rule). The clients of all tasks that train in a round are
stacked into the same batched passes (models.trainer: each client starts from its own task's global or edge
model, FederatedTask.start), then each task merges only its own clients' updates (FederatedTask.merge), so training
one task never touches another's adapters or head. The tasks share `[learning]`'s model, LoRA settings, optimiser
and batch: one payload and one compute model for every vehicle, and a common head width (the same number of
labels)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from cosim.federation.learning import FederatedTask, LearningSetup, load_base
from cosim.federation.task import Task
from cosim.scenario import LearningConfig, ScenarioError, TaskConfig, head_width_problem
from models.data import EncodedData, load_splits
from models.trainer import LocalTrainer


class MultiTask(Task):
    """`tasks` on the base `[learning]` describes (module doc); `client` indices run over all tasks' shards, task
    after task."""

    round_shape = ("down", "compute", "up")

    def __init__(self, cfg: LearningConfig, tasks: list[TaskConfig], seed: int,
                 reciprocal_downlink: bool = False) -> None:
        configs = [task.learning(cfg) for task in tasks]
        base = load_base(cfg, load_splits(configs[0].dataset)[0].num_labels, seed)
        setups = [LearningSetup.load(config, seed, base) for config in configs]
        widths = [head_width_problem(index, setup.num_labels, setups[0].num_labels)
                  for index, setup in enumerate(setups)]
        if any(widths):
            raise ScenarioError("scenario", [problem for problem in widths if problem])
        self.offsets = np.cumsum([0] + [config.clients for config in configs])
        samples = np.cumsum([0] + [len(setup.train) for setup in setups])[:-1]  # where each task's data starts
        train = EncodedData(*(torch.cat([getattr(setup.train, field.name) for setup in setups])
                              for field in dataclasses.fields(EncodedData)))
        shards = [shard + start for setup, start in zip(setups, samples, strict=True) for shard in setup.shards]
        self.trainer = LocalTrainer(base[0], train, shards, batch_size=cfg.batch_size, lr=cfg.lr,
                                    optimizer=cfg.optimizer, seed=seed, precision=cfg.precision,
                                    orthogonal_weight=cfg.compression.orthogonal_weight)
        self.tasks = [FederatedTask(config, seed, reciprocal_downlink, setup, self.trainer)
                      for config, setup in zip(configs, setups, strict=True)]
        super().__init__(cfg, float(np.mean([task.majority_rate for task in self.tasks])))
        self.model = base[0]
        self.update_norms: list[np.ndarray] = []  # each arrived update's rank-component norms (HetLoRA pruning)
        self.task_names = tuple(task.name for task in tasks)
        first = self.tasks[0]
        self.payload, self.compute_samples, self.compute_model = first.payload, first.compute_samples, \
            first.compute_model

    @property
    def names(self) -> tuple[str, ...]:
        return self.task_names

    def client_of(self, slot: np.ndarray) -> np.ndarray:
        return slot % self.offsets[-1]

    def task_of(self, client: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets[1:], client, side="right")

    def train(self, clients: list[int], round_index: int, ranks: list[int], densities: list[float] | None = None,
              edges: list[int] | None = None) -> np.ndarray:
        """All tasks' arrived clients trained in shared passes, each from what its task sends it (FederatedTask.start:
        the global model, or its RSU's edge model); then each task merges its own (ranks, densities and edges sliced
        to them). Each client's training loss."""
        self.update_norms = [np.zeros((0, 2))] * len(clients)
        if not clients:
            return np.zeros(0)
        task = self.task_of(np.asarray(clients))
        starts = [self.tasks[t].start(None if edges is None else edges[i]) for i, t in enumerate(task)]
        updates = self.trainer.train(starts, clients, self.cfg.local_steps, round_index,
                                     ranks=self.tasks[0].trained_ranks(ranks))
        losses = np.zeros(len(clients))
        for index, member in enumerate(self.tasks):
            rows = np.flatnonzero(task == index).tolist()
            if rows:
                losses[rows] = member.merge([updates[i] for i in rows], round_index, *(
                    None if values is None else [values[i] for i in rows] for values in (ranks, densities, edges)))
                for row, norms in zip(rows, member.update_norms, strict=True):
                    self.update_norms[row] = norms
        return losses

    def samples(self, clients: list[int]) -> list[int]:
        """Each client's FedAvg weight (the tasks share one trainer, whose shards run over all tasks' clients)."""
        return self.tasks[0].samples(clients)

    def aggregate_edges(self) -> None:
        """Every task's global round (hierarchical aggregation: each task averages its own edge models)."""
        for task in self.tasks:
            task.aggregate_edges()

    def evaluate_tasks(self) -> np.ndarray:
        return np.array([task.evaluate() for task in self.tasks], dtype=float)

    def evaluate(self) -> tuple[float, float]:
        """The tasks' mean accuracy and loss (each task weighs the same, whatever the size of its held-out set)."""
        accuracy, loss = self.evaluate_tasks().mean(axis=0)
        return float(accuracy), float(loss)

    def state_dict(self) -> dict[str, Any]:
        return {name: task.state_dict() for name, task in zip(self.names, self.tasks, strict=True)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, task in zip(self.names, self.tasks, strict=True):
            task.load_state_dict(state[name])
