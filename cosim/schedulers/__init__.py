"""Schedulers: one module per family, all reachable by name through the registry."""

from cosim.schedulers import lyapunov, simple, tsfa  # noqa: F401 - registers lyapunov, aaba, gs; all-in, random; tsfa
from cosim.schedulers.base import (
    Observation,
    Plan,
    RoundFeedback,
    Scheduler,
    SchedulerConfig,
    make_scheduler,
    register,
    scheduler_config_class,
    scheduler_config_union,
    scheduler_names,
)

__all__ = [
    "Observation",
    "Plan",
    "RoundFeedback",
    "Scheduler",
    "SchedulerConfig",
    "make_scheduler",
    "register",
    "scheduler_config_class",
    "scheduler_config_union",
    "scheduler_names",
]
