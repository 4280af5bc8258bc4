"""What a scheduler sees, what it decides, and the registry that finds schedulers by name (the built-ins, and a
user's own class named `module:Class` or published under the entry point group `cosim.schedulers`)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any, Literal, Protocol, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from cosim.compute import ComputeModel
from cosim.payload import IntArrayLike, Payload
from cosim.radio import RateModel

ENTRY_POINT_GROUP = "cosim.schedulers"


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
    task: np.ndarray | None = None  # (n,) index of each candidate's task ([[tasks]]); None: one task (all 0)
    budget_j: np.ndarray | None = None  # (n,) per-round energy budget from the split (cosim.budget); None: none

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
    # (k,) each one's (r_k, 2) update component norms ‖A_i‖, ‖B_:,i‖ (models.soft.component_norms), None where its
    # update did not arrive; None when the task has no LoRA factors on the vehicle
    component_norms: list[np.ndarray | None] | None = None


class Scheduler(Protocol):
    def plan(self, obs: Observation) -> Plan: ...

    def observe(self, feedback: RoundFeedback) -> None: ...


class SchedulerConfig(BaseModel):
    """Base of every scheduler's own config table; `name` is the registry key. Strict and finite like every table."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
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
    return Annotated[scheduler_configs(), Field(discriminator="name")]


def scheduler_configs() -> Any:
    """The union of every registered config, for a model field whose discriminator is already set."""
    return Union[tuple(config for config, _ in _REGISTRY.values())]  # noqa: UP007 - a runtime-built union


def make_scheduler(config: SchedulerConfig, rng: np.random.Generator) -> Scheduler:
    _, factory = _REGISTRY[config.name]
    return factory(config, rng)


def scheduler_source(name: str) -> str | None:
    """The source file of a user's scheduler (None for the built-ins): part of what a study's run key hashes."""
    _, factory = _REGISTRY[name]
    module = inspect.getmodule(factory)
    return None if module is None or module.__name__.startswith("cosim.") else inspect.getsourcefile(module)


class SchedulerImportError(ValueError):
    """A user's scheduler that cannot be loaded; the message says why and what to do."""


def load_user_scheduler(name: object) -> bool:
    """Register the user's scheduler `name` if it is one: `package.module:Class` importable from the working
    directory or PYTHONPATH, or an entry point of the group `cosim.schedulers`. The class is built like the
    built-ins, `Class(config, rng)`, and names its config table in a `Config` attribute (a SchedulerConfig
    subclass without a `name` literal: the name it is loaded under becomes its tag). True if the registry grew."""
    if not isinstance(name, str) or name in _REGISTRY:
        return False
    if ":" in name:
        factory = _import(name)
    else:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not found:
            return False  # an unknown name: validation lists the choices
        try:
            factory = next(iter(found)).load()
        except Exception as exc:
            raise SchedulerImportError(f"entry point '{name}' of {ENTRY_POINT_GROUP} cannot be loaded "
                                       f"({type(exc).__name__}: {exc}); reinstall the package that provides it"
                                       ) from None
    config = getattr(factory, "Config", None)
    if not (isinstance(config, type) and issubclass(config, SchedulerConfig)):
        raise SchedulerImportError(f"'{name}' has no `Config` attribute subclassing cosim.schedulers.SchedulerConfig;"
                                   " add one naming the scheduler's config table")
    if not all(callable(getattr(factory, method, None)) for method in ("plan", "observe")):
        raise SchedulerImportError(f"'{name}' needs plan(obs) -> Plan and observe(feedback) methods")
    tagged = create_model(config.__name__, __base__=config, __module__=config.__module__,
                          name=(Literal[name], ...))  # type: ignore[call-overload]
    _REGISTRY[name] = (tagged, factory)
    return True


def _import(spec: str) -> Factory:
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # like `python -m`: the user's modules beside them
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SchedulerImportError(f"cannot import '{module_name}' ({exc}); run from the directory that holds it "
                                   "or add that directory to PYTHONPATH") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise SchedulerImportError(f"module '{module_name}' has no '{attribute}'; check the spelling after ':'")
    return factory


def equal_share(rsu: np.ndarray, rsu_bandwidth_hz: np.ndarray) -> np.ndarray:
    """FDMA: each RSU splits its band equally among the participants it serves."""
    counts = np.bincount(rsu, minlength=len(rsu_bandwidth_hz))
    return rsu_bandwidth_hz[rsu] / counts[rsu]

