"""The contract between the round process and a learning task: the steps of one participant's round (transfers
whose bits the task's Payload counts, and local computation), and what the server does with what arrived."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cosim.compute import ComputeModel
from cosim.payload import FloatArrayLike, IntArrayLike, Payload
from cosim.scenario import LearningConfig


@dataclass(frozen=True)
class Phase:
    """One step of a participant's round: a transfer of `bits` ("down" or "up") or `samples`' worth of local
    computation on the vehicle ("compute")."""

    kind: Literal["down", "compute", "up"]
    bits: int = 0
    samples: float = 0.0


class Task(ABC):
    """A learning task as the round process drives it. Subclasses set `payload` (the legs of a round, in order),
    `round_shape` (those legs' kinds with "compute" where the vehicle computes) and `compute_samples` (at the
    default rank); `compute_model`, when set, scales the computation with the rank (cosim.compute)."""

    payload: Payload
    preset: object | None = None  # an offline stage's inputs and outputs (a dataclass), traced in the manifest
    round_shape: tuple[Literal["down", "compute", "up"], ...]
    compute_samples: float
    compute_model: ComputeModel | None = None
    # After train: each trained client's (r_k, 2) update component norms (models.soft.component_norms), aligned
    # with its `clients`; None for a task without LoRA factors on the vehicle. HetLoRA's self-pruning reads them.
    update_norms: list[np.ndarray] | None = None

    def __init__(self, cfg: LearningConfig, majority_rate: float) -> None:
        self.cfg = cfg
        self.majority_rate = majority_rate

    def phases(self, rank: IntArrayLike = None, density: FloatArrayLike = None) -> list[Phase]:
        """One participant's round, in order, at its planned rank and density: bits from the payload, so the
        transfers carry exactly what the scheduler planned for."""
        legs = iter(zip(self.payload.legs, self.payload.leg_bits(rank, density), strict=True))
        phases = []
        for kind in self.round_shape:
            if kind == "compute":
                phases.append(Phase("compute", samples=self.compute_samples_at(rank)))
                continue
            leg, bits = next(legs)
            if leg.kind != kind:
                raise ValueError(f"round_shape {self.round_shape} does not follow the payload's legs")
            phases.append(Phase(kind, bits=int(bits)))
        return phases

    def compute_samples_at(self, rank: IntArrayLike = None) -> float:
        """Reference-workload samples (the device profile's unit) of one participant's computation at `rank`."""
        scale = 1.0 if self.compute_model is None else float(self.compute_model.scale(rank))
        return self.compute_samples * scale

    @abstractmethod
    def train(self, clients: list[int], round_index: int, ranks: list[int], densities: list[float] | None = None,
              edges: list[int] | None = None) -> np.ndarray | float:
        """Learn from the clients whose phases all completed (each at its planned rank and upload density; None:
        the payload's default); their training losses, aligned with `clients`, or one loss standing for all.
        `edges`: the RSU each update reached, for hierarchical aggregation (None: flat, one global model)."""

    @abstractmethod
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, loss) of the current global model on the held-out data."""

    @property
    def names(self) -> tuple[str, ...]:
        """The fine-tuning tasks' names (the `task` column of the traces): one, the dataset's, by default."""
        return (Path(self.cfg.dataset).name,)

    def task_of(self, client: np.ndarray) -> np.ndarray:
        """Client -> index into `names`."""
        return np.zeros(np.shape(client), dtype=np.int64)

    def evaluate_tasks(self) -> np.ndarray:
        """(tasks, 2): each task's (accuracy, loss) on its held-out data."""
        return np.array([self.evaluate()], dtype=float)

    @property
    def upload_bits(self) -> int:
        """At the default rank and density (the manifest's summary; per-participant bits are in the traces)."""
        return int(self.payload.upload_bits())

    @property
    def download_bits(self) -> int:
        return int(self.payload.download_bits())

    @property
    def payload_bits(self) -> int:
        """L_k at the default rank and density: what a plan charges to a vehicle's share (see cosim.payload)."""
        return int(self.payload.scheduled_bits())

    def client_of(self, slot: np.ndarray) -> np.ndarray:
        """Vehicle slot -> data shard: vehicles beyond `clients` reuse shards in turn."""
        return slot % self.cfg.clients
