"""Reference schedulers without optimisation: everyone, or a uniform random subset."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from cosim.schedulers.base import Observation, Plan, RoundFeedback, SchedulerConfig, equal_share, register


class AllInConfig(SchedulerConfig):
    name: Literal["all-in"]


class RandomConfig(SchedulerConfig):
    name: Literal["random"]
    participants: int = Field(10, ge=1)


class _EqualBandwidth:
    """Shared behaviour: FDMA equal shares per RSU, nothing learnt from feedback."""

    def _plan(self, obs: Observation, chosen: np.ndarray) -> Plan:
        chosen = np.sort(chosen)
        return Plan(chosen, equal_share(obs.rsu[chosen], obs.rsu_bandwidth_hz))

    def observe(self, feedback: RoundFeedback) -> None:
        del feedback


@register(AllInConfig)
class AllIn(_EqualBandwidth):
    """Every candidate takes part, bandwidth split equally, no delay limit (seed 001's All-in baseline)."""

    def __init__(self, config: AllInConfig, rng: np.random.Generator) -> None:
        del config, rng

    def plan(self, obs: Observation) -> Plan:
        return self._plan(obs, np.arange(obs.count))


@register(RandomConfig)
class RandomSubset(_EqualBandwidth):
    """A uniform random subset of the candidates, as in FedAvg's client sampling."""

    def __init__(self, config: RandomConfig, rng: np.random.Generator) -> None:
        self.participants = config.participants
        self.rng = rng

    def plan(self, obs: Observation) -> Plan:
        size = min(self.participants, obs.count)
        return self._plan(obs, self.rng.choice(obs.count, size=size, replace=False))
