"""Seed 000's rank schedulers: UCB-DUAL (each vehicle picks its LoRA rank by an energy-constrained bandit) and its
baselines HomoLoRA (one rank for everyone) and HetLoRA (a rank fixed by the vehicle's capability tier).

Which vehicles take part is the same rule for all three, so a comparison isolates the rank: a uniform random subset
of at most `participants` candidates (FedAvg's client sampling, the `random` scheduler), each RSU's band split
equally among the participants it serves. The ranks a scheduler may assign are checked against the task's payload
when it plans (flat federated LoRA offers 1..learning.lora_rank).

UCB-DUAL (seed 000; the constrained-bandit primal–dual of e.g. Agrawal & Devanur, 2014), per vehicle, keyed by its
id so the state travels with it across RSUs. Arm a = a rank; after n_a plays it has mean reward r̄_a and mean cost
c̄_a. At the vehicle's t-th round it plays

    argmax_a  min(1, r̄_a + β_a) − λ·max(0, c̄_a − β_a),   β_a = sqrt(2 ln t / n_a)   (every arm once first),

and then updates its dual variable λ ← max(0, λ + η_t·(c − 1)) with η_t = η/√t. Reward: exp(−ℓ) for the client's
own training loss ℓ (the geometric-mean probability its update's model gives the right label: in (0, 1], known to
the client), 0 when its update did not arrive. Cost: the energy the round cost it (compute, transmission, idling)
divided by its per-round budget, so the budget is c ≤ 1 on average: `energy_budget_j`, or, with an
`[energy_budget]` table, the per-client budget of its task from the server's split (Observation.budget_j,
cosim.budget).
"""

from __future__ import annotations

import dataclasses
import zlib
from abc import ABC, abstractmethod
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field

from cosim.schedulers.base import Observation, Plan, RoundFeedback, register
from cosim.schedulers.simple import RandomConfig, RandomSubset

DEFAULT_RANKS = (2, 4, 8, 16)


def _distinct_positive(ranks: list[int]) -> list[int]:
    if any(rank < 1 for rank in ranks) or len(set(ranks)) != len(ranks):
        raise ValueError("must be distinct positive ranks, e.g. [2, 4, 8, 16]")
    return ranks


Ranks = Annotated[list[int], Field(min_length=1), AfterValidator(_distinct_positive)]


def _task_ranks(learning: Any) -> range:
    """The ranks the scenario's task offers (see cosim.federation.learning's payloads)."""
    low = 1 if learning.mode == "flat" else learning.lora_rank
    return range(low, learning.lora_rank + 1)


def _rank_problems(field: str, ranks: list[int], learning: Any) -> list[str]:
    allowed = _task_ranks(learning)
    missing = sorted(set(ranks) - set(allowed))
    if not missing:
        return []
    fix = (f"raise learning.lora_rank to {max(ranks)} or drop them" if learning.mode == "flat"
           else f"split mode trains the server's one rank: use [{learning.lora_rank}]")
    return [f"{field}: ranks {missing} are not offered by the task (it allows {allowed.start}..{allowed.stop - 1}); "
            f"{fix}"]


class UcbDualConfig(RandomConfig):
    name: Literal["ucb-dual"]  # type: ignore[assignment]
    ranks: Ranks = Field(default_factory=lambda: list(DEFAULT_RANKS))  # the arms
    energy_budget_j: float = Field(5.0, gt=0)  # per vehicle and round
    eta: float = Field(1.0, gt=0)  # dual step size η (η_t = η/√t)

    def learning_problems(self, learning: Any) -> list[str]:
        return _rank_problems("scheduler.ranks", self.ranks, learning)


class HomoLoraConfig(RandomConfig):
    name: Literal["homolora"]  # type: ignore[assignment]
    rank: int | None = Field(None, ge=1)  # None: the task's own rank (learning.lora_rank)

    def learning_problems(self, learning: Any) -> list[str]:
        return [] if self.rank is None else _rank_problems("scheduler.rank", [self.rank], learning)


class HetLoraConfig(RandomConfig):
    name: Literal["hetlora"]  # type: ignore[assignment]
    ranks: Ranks = Field(default_factory=lambda: list(DEFAULT_RANKS))  # one per capability tier
    prune_gamma: float = Field(0.25, gt=0, lt=1)  # γ: a self-pruning vehicle drops ⌊γ·r⌋ of its r components
    prune_threshold: float = Field(0.0, ge=0)  # prune when the trailing ‖B‖·‖A‖ is below it; 0: never prune

    def learning_problems(self, learning: Any) -> list[str]:
        return _rank_problems("scheduler.ranks", self.ranks, learning)


def offered(obs: Observation, ranks: list[int], field: str) -> np.ndarray:
    """The configured ranks as an array, or one error naming the field if the task cannot train them (a scenario
    run through `cosim validate` has been told so already)."""
    missing = sorted(set(ranks) - set(obs.payload.ranks))
    if missing:
        raise ValueError(f"{field}: ranks {missing} are not offered by the task (it allows {list(obs.payload.ranks)})"
                         f"; raise learning.lora_rank to {max(ranks)} or drop them")
    return np.asarray(ranks, dtype=np.int64)


class UcbDual:
    """One vehicle's energy-constrained bandit over its rank arms (see the module doc)."""

    def __init__(self, arms: int, eta: float) -> None:
        self.plays = np.zeros(arms)
        self.reward_sum = np.zeros(arms)
        self.cost_sum = np.zeros(arms)
        self.dual = 0.0
        self.eta = eta

    @property
    def rounds(self) -> int:
        return int(self.plays.sum())

    def choose(self) -> int:
        """The arm to play next: an unplayed one first, else the best optimistic Lagrangian."""
        unplayed = np.flatnonzero(self.plays == 0)
        if len(unplayed):
            return int(unplayed[0])
        radius = np.sqrt(2.0 * np.log(self.rounds + 1) / self.plays)
        reward_ucb = np.minimum(1.0, self.reward_sum / self.plays + radius)
        cost_lcb = np.maximum(0.0, self.cost_sum / self.plays - radius)
        return int(np.argmax(reward_ucb - self.dual * cost_lcb))

    def update(self, arm: int, reward: float, cost: float) -> None:
        """Record a play; `cost` is relative to the budget (1 = exactly the budget)."""
        self.plays[arm] += 1
        self.reward_sum[arm] += reward
        self.cost_sum[arm] += cost
        self.dual = max(0.0, self.dual + self.eta / np.sqrt(self.rounds) * (cost - 1.0))


class _RankScheduler(RandomSubset, ABC):
    """Random participants with equal bandwidth (RandomSubset), plus a rank for each from `ranks_for`."""

    def plan(self, obs: Observation) -> Plan:
        plan = super().plan(obs)
        return dataclasses.replace(plan, rank=self.ranks_for(obs, plan.participants))

    @abstractmethod
    def ranks_for(self, obs: Observation, chosen: np.ndarray) -> np.ndarray:
        """(k,) the rank of each chosen candidate (indices into `obs`)."""


@register(UcbDualConfig)
class UcbDualScheduler(_RankScheduler):
    """Seed 000's UCB-DUAL: every participant's rank from its own bandit (module doc)."""

    def __init__(self, config: UcbDualConfig, rng: np.random.Generator) -> None:
        super().__init__(config, rng)
        self.config = config
        self.bandits: dict[str, UcbDual] = {}
        self._pending: list[tuple[str, int]] = []  # this round's (vehicle, arm), aligned with the plan
        self._budget_j: np.ndarray | float = config.energy_budget_j  # this round's, aligned with the plan

    def ranks_for(self, obs: Observation, chosen: np.ndarray) -> np.ndarray:
        ranks = offered(obs, self.config.ranks, "scheduler.ranks")
        self._pending = []
        for vehicle in obs.vehicles[chosen].tolist():
            bandit = self.bandits.setdefault(vehicle, UcbDual(len(ranks), self.config.eta))
            self._pending.append((vehicle, bandit.choose()))
        self._budget_j = self.config.energy_budget_j if obs.budget_j is None else obs.budget_j[chosen]
        return ranks[[arm for _, arm in self._pending]]

    def observe(self, feedback: RoundFeedback) -> None:
        loss = np.full(len(feedback.arrived), np.nan) if feedback.train_loss is None else feedback.train_loss
        reward = np.where(feedback.arrived & np.isfinite(loss), np.exp(-np.nan_to_num(loss, nan=np.inf)), 0.0)
        cost = feedback.energy_j / self._budget_j
        for (vehicle, arm), r, c in zip(self._pending, reward, cost, strict=True):
            self.bandits[vehicle].update(arm, float(r), float(c))
        self._pending = []


@register(HomoLoraConfig)
class HomoLora(_RankScheduler):
    """HomoLoRA: every participant trains the same rank (the task's own unless `rank` is set)."""

    def __init__(self, config: HomoLoraConfig, rng: np.random.Generator) -> None:
        super().__init__(config, rng)
        self.rank = config.rank

    def ranks_for(self, obs: Observation, chosen: np.ndarray) -> np.ndarray:
        rank = obs.payload.default_rank if self.rank is None else self.rank
        return np.full(len(chosen), offered(obs, [rank], "scheduler.rank")[0])


@register(HetLoraConfig)
class HetLora(_RankScheduler):
    """HetLoRA (Cho et al., 2024): a vehicle's rank is fixed by its capability tier. The simulator gives every
    vehicle one device profile, so the tier is drawn once per vehicle by a stable hash of its id (CRC-32 mod the
    number of tiers): the same vehicle always trains the same rank, in every run and at every RSU.

    Rank self-pruning: after a vehicle's update of rank r arrives, if its trailing g = ⌊γ·r⌋ components are weak,
    ‖B[:, r−g:r]‖·‖A[r−g:r, :]‖ < `prune_threshold` (Frobenius norms over every adapted module together, from the
    update's component norms in RoundFeedback), it trains rank r − g from then on (and may prune again)."""

    def __init__(self, config: HetLoraConfig, rng: np.random.Generator) -> None:
        super().__init__(config, rng)
        self.ranks = config.ranks
        self.gamma, self.threshold = config.prune_gamma, config.prune_threshold
        self.pruned: dict[str, int] = {}  # vehicle id -> the rank it pruned itself to
        self._planned: list[str] = []  # this round's participants, aligned with the plan

    def ranks_for(self, obs: Observation, chosen: np.ndarray) -> np.ndarray:
        ranks = offered(obs, self.ranks, "scheduler.ranks")
        self._planned = obs.vehicles[chosen].tolist()
        planned = []
        for vehicle in self._planned:
            rank = int(ranks[tier(vehicle, len(ranks))])
            planned.append(min(rank, self.pruned.get(vehicle, rank)))
        return np.array(planned, dtype=np.int64)

    def observe(self, feedback: RoundFeedback) -> None:
        planned, self._planned = self._planned, []
        if feedback.component_norms is None:  # a task without LoRA factors on the vehicle
            return
        for vehicle, norms in zip(planned, feedback.component_norms, strict=True):
            cut = 0 if norms is None else int(self.gamma * len(norms))
            if cut and trailing_norm(norms, cut) < self.threshold:
                self.pruned[vehicle] = len(norms) - cut


def trailing_norm(norms: np.ndarray, components: int) -> float:
    """‖B[:, r−g:r]‖·‖A[r−g:r, :]‖ of the last g = `components` rank components, from the (r, 2) norms of each
    component's A row and B column (models.soft.component_norms)."""
    tail = norms[len(norms) - components:]
    return float(np.sqrt(np.square(tail[:, 0]).sum()) * np.sqrt(np.square(tail[:, 1]).sum()))


def tier(vehicle: str, tiers: int) -> int:
    """A vehicle's capability tier in 0..tiers-1: the same for the same id, independent of the run."""
    return zlib.crc32(vehicle.encode()) % tiers
