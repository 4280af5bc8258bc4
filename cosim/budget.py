"""The server's split of a total energy budget among tasks (seed 000's inter-task level), and each task's per-round,
per-client budget that the rank schedulers' costs are measured against.

Every `period_rounds` (P) rounds the server gives task t the share s_t of the period's total E:

    w_t = ω_t · d_t^a · u_t^b,        s_t = f + (1 − T·f) · w_t / Σ_k w_k      (equal shares if every w_t is 0)

- d_t, difficulty: 1 − the task's latest held-out accuracy (1 before its first evaluation): the task furthest from
  solved gets more;
- u_t, utilisation: the energy its participants spent in the last period over its budget then, capped at 1 (1 in
  the first period): a task that left its budget unspent gets less, overspending earns nothing extra;
- ω_t its `budget_weight`, a and b the exponents, f = `min_share`: every task keeps at least f·E, none starves.

Task t may then spend B_t = s_t·E / P per round, B_t / m_t per participant, where m_t is its mean number of
participants per round over the last P rounds (at least 1); in the very first round, before any plan, the number of
its candidates (a task never starts over its budget).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from cosim.scenario import EnergyBudgetConfig


def split_shares(weight: np.ndarray, difficulty: np.ndarray, utilisation: np.ndarray, a: float, b: float,
                 floor: float) -> np.ndarray:
    """s_t of the module doc; shares sum to 1."""
    raw = weight * np.power(difficulty, a) * np.power(np.clip(utilisation, 0.0, 1.0), b)
    total = raw.sum()
    proportional = raw / total if total > 0 else np.full(len(raw), 1.0 / len(raw))
    return floor + (1.0 - len(raw) * floor) * proportional


class TaskBudgets:
    """The split of the module doc over a run: `client_budget_j` before each plan, `record` after each round."""

    def __init__(self, config: EnergyBudgetConfig, weights: Sequence[float]) -> None:
        self.config = config
        self.weight = np.asarray(weights, dtype=float)
        tasks = len(self.weight)
        self.difficulty = np.ones(tasks)
        self.share = split_shares(self.weight, self.difficulty, np.ones(tasks), config.difficulty_exponent,
                                  config.utilisation_exponent, config.min_share)
        self.spent = np.zeros(tasks)  # in the current period
        self.rounds = 0
        self.participants: deque[np.ndarray] = deque(maxlen=config.period_rounds)

    @property
    def round_budget_j(self) -> np.ndarray:
        """(T,) B_t: what each task may spend per round in the current period."""
        return self.share * self.config.total_j / self.config.period_rounds

    def client_budget_j(self, task: np.ndarray) -> np.ndarray:
        """(T,) each task's per-participant budget this round; `task` holds the candidates' task indices."""
        expected = (np.mean(self.participants, axis=0) if self.participants
                    else np.bincount(task, minlength=len(self.weight)).astype(float))
        return self.round_budget_j / np.maximum(expected, 1.0)

    def record(self, task: np.ndarray, energy_j: np.ndarray, accuracy: np.ndarray | None) -> None:
        """After a round: the participants' tasks and energy, and each task's accuracy if it was evaluated (NaN
        keeps its last); at the end of a period, the next period's shares."""
        tasks = len(self.weight)
        self.participants.append(np.bincount(task, minlength=tasks).astype(float))
        self.spent += np.bincount(task, weights=energy_j, minlength=tasks)
        if accuracy is not None:
            self.difficulty = np.where(np.isfinite(accuracy), 1.0 - np.asarray(accuracy, dtype=float),
                                       self.difficulty)
        self.rounds += 1
        if self.rounds % self.config.period_rounds == 0:
            utilisation = self.spent / (self.share * self.config.total_j)
            self.share = split_shares(self.weight, self.difficulty, utilisation, self.config.difficulty_exponent,
                                      self.config.utilisation_exponent, self.config.min_share)
            self.spent = np.zeros(tasks)
