"""Schedulers: one module per family, all reachable by name through the registry."""

from cosim.schedulers import lyapunov, rank, simple, tsfa  # noqa: F401 - registers each module's schedulers
from cosim.schedulers.base import (
    Observation,
    Plan,
    RoundFeedback,
    Scheduler,
    SchedulerConfig,
    SchedulerImportError,
    equal_share,
    load_user_scheduler,
    make_scheduler,
    register,
    scheduler_config_class,
    scheduler_config_union,
    scheduler_configs,
    scheduler_names,
    scheduler_source,
)

__all__ = [
    "Observation",
    "Plan",
    "RoundFeedback",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerImportError",
    "equal_share",
    "load_user_scheduler",
    "make_scheduler",
    "register",
    "scheduler_config_class",
    "scheduler_config_union",
    "scheduler_configs",
    "scheduler_names",
    "scheduler_source",
]
