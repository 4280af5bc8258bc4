"""What a scheduler sees, what it decides, and the registry that finds schedulers by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cosim.compute import ComputeModel
from cosim.payload import IntArrayLike, Payload
from cosim.radio import RateModel


@dataclass(frozen=True)
class Observation:
    """What the RSUs know when a round starts: one entry per candidate vehicle (served, battery left)."""

    round_index: int
    time_s: float
    vehicles: np.ndarray  # (n,) ids
    rsu: np.ndarray  # (n,) serving RSU index
    distance_m: np.ndarray  # (n,) to the serving RSU
    gain: np.ndarray  # (n,) linear channel power gain to the serving RSU (path loss × shadowing × fading)
    speed_mps: np.ndarray  # (n,)
    dwell_s: np.ndarray  # (n,) estimated time left in the serving RSU's coverage (straight-line extrapolation)
    battery_j: np.ndarray  # (n,)
    tx_power_w: np.ndarray  # (n,)
    compute_time_s: np.ndarray  # (n,) local training time from the device profile, at the task's default rank
    rsu_bandwidth_hz: np.ndarray  # (m,) uplink bandwidth of each RSU
    rate: RateModel  # the rate every transfer will run at: plan with it
    payload: Payload  # bits per participant as functions of (rank, density); scheduled_bits is the L_k to plan for
    deadline_s: float
    compute: ComputeModel | None = None  # how computation scales with the rank (None: it does not)

    @property
    def count(self) -> int:
        return len(self.vehicles)

    def compute_time_at(self, rank: IntArrayLike) -> np.ndarray:
        """(n,) local training time of every candidate at `rank` (one rank, or one per candidate)."""
        return self.compute_time_s * (1.0 if self.compute is None else self.compute.scale(rank))


@dataclass(frozen=True)
class Plan:
    """The round's decision: which candidates (observation indices), each one's uplink bandwidth, and optionally
    each one's LoRA rank and upload density (None: the task's default for everyone)."""

    participants: np.ndarray  # (k,) int indices into Observation arrays
    bandwidth_hz: np.ndarray  # (k,) FDMA share of the serving RSU's band
    rank: np.ndarray | None = None  # (k,) int, from Observation.payload.ranks
    density: np.ndarray | None = None  # (k,) float in (0, 1]: the fraction of rank components uploaded

    def __post_init__(self) -> None:
        for name in ("bandwidth_hz", "rank", "density"):
            column = getattr(self, name)
            if column is not None and np.shape(column) != self.participants.shape:
                raise ValueError(f"Plan: {name} must have one entry per participant ({len(self.participants)}), "
                                 f"got shape {np.shape(column)}")

    def scheduled_bits(self, payload: Payload) -> np.ndarray:
        """Each participant's L_k under this plan: what its share must carry at its uplink rate."""
        return np.broadcast_to(payload.scheduled_bits(self.rank, self.density), self.participants.shape)

    def planned_air_time_s(self, obs: Observation) -> np.ndarray:
        """Each participant's time on the air at the observed channel: L_k / R_k(B_k)."""
        i = self.participants
        return obs.rate.delay_s(self.scheduled_bits(obs.payload), self.bandwidth_hz, obs.tx_power_w[i], obs.gain[i])


@dataclass(frozen=True)
class RoundFeedback:
    """What the server learns after a round, for schedulers that adapt (queues, bandits)."""

    round_index: int
    delay_s: float  # the round's duration: first download to last upload, computation included
    air_time_s: float  # max of participant_air_time_s: the seeds' τ(t), what a delay-budget queue is charged
    arrived: np.ndarray  # (k,) bool, aligned with Plan.participants
    energy_j: np.ndarray  # (k,)
    accuracy: float | None
    participant_air_time_s: np.ndarray  # (k,) realised time of each one's scheduled transfers (see cosim.payload)
    train_loss: np.ndarray | None = None  # (k,) each one's local training loss, NaN where its update did not arrive


class Scheduler(Protocol):
    def plan(self, obs: Observation) -> Plan: ...

    def observe(self, feedback: RoundFeedback) -> None: ...


class SchedulerConfig(BaseModel):
    """Base of every scheduler's own config table; `name` is the registry key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str

    def learning_problems(self, learning: Any) -> list[str]:
        """`field.path: what is wrong` for each setting this scheduler cannot use with the scenario's learning
        config (e.g. ranks the task does not offer); checked when a scenario is loaded."""
        del learning
        return []


Factory = Callable[[Any, np.random.Generator], Scheduler]
_REGISTRY: dict[str, tuple[type[SchedulerConfig], Factory]] = {}


def register(config: type[SchedulerConfig]) -> Callable[[Factory], Factory]:
    """Class decorator: make a scheduler available by the literal `name` of its config."""

    def decorate(factory: Factory) -> Factory:
        (name,) = config.model_fields["name"].annotation.__args__  # type: ignore[union-attr]
        _REGISTRY[name] = (config, factory)
        return factory

    return decorate


def scheduler_names() -> list[str]:
    return sorted(_REGISTRY)


def scheduler_config_class(name: str) -> type[SchedulerConfig] | None:
    entry = _REGISTRY.get(name)
    return entry[0] if entry else None


def scheduler_config_union() -> Any:
    """A pydantic type that validates a `[scheduler]` table against the config of the scheduler it names."""
    configs = tuple(config for config, _ in _REGISTRY.values())
    return Annotated[Union[configs], Field(discriminator="name")]  # noqa: UP007 - a runtime-built union


def make_scheduler(config: SchedulerConfig, rng: np.random.Generator) -> Scheduler:
    _, factory = _REGISTRY[config.name]
    return factory(config, rng)


def equal_share(rsu: np.ndarray, rsu_bandwidth_hz: np.ndarray) -> np.ndarray:
    """FDMA: each RSU splits its band equally among the participants it serves."""
    counts = np.bincount(rsu, minlength=len(rsu_bandwidth_hz))
    return rsu_bandwidth_hz[rsu] / counts[rsu]

