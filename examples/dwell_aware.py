"""A scheduler of your own, outside the package: schedule the vehicles that stay in coverage long enough.

Use it from a scenario or a study, run from the repository root (or with this directory's parent on PYTHONPATH):

    [scheduler]
    name = "examples.dwell_aware:DwellAware"
    participants = 10
    margin = 2.0

Its config table is validated like a built-in's (`cosim validate` names a bad field and the fix).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from cosim.schedulers import Observation, Plan, RoundFeedback, SchedulerConfig, equal_share


class DwellAwareConfig(SchedulerConfig):
    participants: int = Field(10, ge=1)  # at most this many per round
    margin: float = Field(2.0, ge=1.0)  # the dwell time must cover this many times the expected exchange


class DwellAware:
    """A handover cuts an upload short, so a vehicle about to leave its RSU's coverage wastes its work. Estimate each
    candidate's exchange (download + local training + upload at an equal share of its RSU's band, as if every
    candidate took part), keep those whose estimated dwell covers it `margin` times, and take the `participants`
    with the most slack; the chosen share their RSU's band equally."""

    Config = DwellAwareConfig

    def __init__(self, config: DwellAwareConfig, rng: np.random.Generator) -> None:
        del rng  # deterministic
        self.config = config

    def plan(self, obs: Observation) -> Plan:
        share_hz = equal_share(obs.rsu, obs.rsu_bandwidth_hz)
        rate_bps = obs.rate.rate_bps(share_hz, obs.tx_power_w, obs.gain)
        with np.errstate(divide="ignore"):
            exchange_s = obs.compute_time_s + (obs.payload.upload_bits() + obs.payload.download_bits()) / rate_bps
        slack_s = obs.dwell_s - self.config.margin * exchange_s
        fits = np.flatnonzero(slack_s > 0)
        chosen = np.sort(fits[np.argsort(-slack_s[fits], kind="stable")][: self.config.participants])
        return Plan(chosen, equal_share(obs.rsu[chosen], obs.rsu_bandwidth_hz))

    def observe(self, feedback: RoundFeedback) -> None:
        del feedback  # nothing learnt across rounds
