"""Seed 002's TSFA online stage: each round, the set, its FDMA bandwidth and every scheduled vehicle's upload density.

The offline stage runs in the task before round 1 (learning.compression.preset = "covariance", models.soft): it
fixes the rank and presets the density ρ0 (the payload's default density) and the learning rate from the data. Online,
a vehicle may send k = 1..K0 of its r rank components per module (K0 = round(ρ0·r): no more than the data needs),
which ones chosen on the vehicle by their norm score (models.soft). A participant at k components is worth k/K0 of a
full one.

limit = "long-term" (the default, the public revision): the time-average air time meets τ̄, through seed 001's virtual
queue Q and drift-plus-penalty (cosim.schedulers.lyapunov, reused): for every uniform level k the exact set expansion
minimises drift(τ) − V(t)·w(t)·|S|·k/K0, and the best (k, S) sets the round's delay τ*. Then, at that same delay, each
RSU's band is re-divided among S to maximise Σ k_j: every member starts at one component and the band left is given
away one component at a time, cheapest extra bandwidth first. The bandwidth a vehicle needs is convex in its bits,
so this greedy is exact, and a weak channel ends up with fewer components than a strong one. The uniform level was
feasible, so the sum is at least its and the objective no worse; the final shares make all of an RSU's uploads
finish together (equal-finish, cosim.bandwidth), at or before τ*.

limit = "per-round": every round's planned delay is at most τ̄ (the hard limit). The largest set that fits at some
level (set expansion with an objective that is +∞ above τ̄), then the re-division at τ̄ itself. A round where no
vehicle can meet τ̄ even with one component schedules nobody (traced as a round without participants).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from cosim.schedulers.base import Observation, Plan, register
from cosim.schedulers.lyapunov import Drift, DriftPlusPenalty, Lyapunov, _DriftPlusPenaltyConfig, set_expansion


class TsfaConfig(_DriftPlusPenaltyConfig):
    name: Literal["tsfa"]
    drift: Drift = "exact"  # steady participation (see cosim.schedulers.lyapunov)
    limit: Literal["long-term", "per-round"] = "long-term"  # τ̄ on average (virtual queue) or in every round

    def learning_problems(self, learning: Any) -> list[str]:
        if learning.mode != "flat":
            return ["scheduler.name = 'tsfa' sparsifies flat LoRA uploads; set learning.mode = 'flat'"]
        return []


class _HardLimit:
    """Per-round objective: −|S|·k/K0 while the delay is within τ̄, +∞ beyond."""

    def __init__(self, tau_bar_s: float, worth: float) -> None:
        self.tau_bar_s, self.worth = tau_bar_s, worth

    def __call__(self, delay_s: np.ndarray | float, size: np.ndarray | int) -> np.ndarray | float:
        return np.where(np.asarray(delay_s) <= self.tau_bar_s, -np.asarray(size) * self.worth, np.inf)


def densify(need_hz: np.ndarray, rsu: np.ndarray, rsu_bandwidth_hz: np.ndarray) -> np.ndarray:
    """Components per member, maximising their sum with each RSU's Σ need ≤ its band. need_hz (members, K0): the
    bandwidth member j needs to carry k + 1 components in time, non-decreasing and convex in k; column 0 must fit."""
    members, top = need_hz.shape
    left = rsu_bandwidth_hz - np.bincount(rsu, need_hz[:, 0], minlength=len(rsu_bandwidth_hz))
    extra = np.diff(need_hz, axis=1)  # (members, K0 - 1): the cost of each next component
    who = np.repeat(np.arange(members), top - 1)
    cost = extra.ravel()
    order = np.lexsort((cost, rsu[who]))  # by RSU, cheapest first within each
    order = order[np.isfinite(cost[order])]
    spent = np.cumsum(cost[order])
    groups = rsu[who[order]]
    before = np.r_[0.0, spent[:-1]]
    first = np.r_[True, groups[1:] != groups[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    fits = spent - before[start] <= left[groups]
    return 1 + np.bincount(who[order[fits]], minlength=members)


@register(TsfaConfig)
class Tsfa(Lyapunov):
    """TSFA: drift-plus-penalty set and density under a long-term latency limit, or a hard per-round one (see the
    module doc). Seed 001's queue, V(t)·w(t), prefix delays and equal-finish shares, with bits per member."""

    config: TsfaConfig

    def plan(self, obs: Observation) -> Plan:
        c, payload = self.config, obs.payload
        rank = payload.default_rank
        top = int(payload.kept_components(rank, None))
        bits = payload.scheduled_bits(rank, np.arange(1, top + 1) / rank).astype(float)  # at 1..K0 components
        a = obs.rate.snr_bandwidth_hz(obs.tx_power_w, obs.gain)
        reward = self.reward_s2(obs.round_index)
        hard = c.limit == "per-round"
        best = (np.inf, np.zeros(0, dtype=np.int64), 0.0)
        for level in range(top, 0, -1):  # densest first: ties go to more components
            objective = (_HardLimit(c.tau_bar_s, level / top) if hard else
                         DriftPlusPenalty(self.queue_s, reward * level / top, c.tau_bar_s, c.drift))
            chosen, delay = set_expansion(bits[level - 1], a, obs.rsu, obs.rsu_bandwidth_hz, objective,
                                          self.prefix_delays, obs.rate.max_spectral_efficiency,
                                          c.allow_empty_round or hard)
            value = float(objective(delay, len(chosen)))
            if len(chosen) and value < best[0]:
                best = (value, chosen, delay)
        _, chosen, delay = best
        self.planned_delay_s = 0.0
        if len(chosen) == 0:
            return Plan(chosen, np.zeros(0), density=np.zeros(0))
        need = obs.rate.bandwidth_for_rate_hz(bits[None, :] / (c.tau_bar_s if hard else delay),
                                              obs.tx_power_w[chosen, None], obs.gain[chosen, None])
        kept = densify(need, obs.rsu[chosen], obs.rsu_bandwidth_hz)
        plan = Plan(chosen, self.bandwidth_hz(obs, bits[kept - 1], a, chosen), density=kept / rank)
        self.planned_delay_s = float(plan.planned_air_time_s(obs).max())
        return plan
