"""Federated rounds on the SimPy clock: the task contract (`task`), the learning tasks (`learning`), one vehicle's
round (`participant`), several tasks on one base (`multitask`) and the round orchestration (`flat`)."""

from cosim.federation.flat import FlatFederation, RoundSummary
from cosim.federation.hierarchical import HierarchicalFederation
from cosim.federation.learning import FederatedTask, LearningSetup, SplitTask, make_task
from cosim.federation.multitask import MultiTask
from cosim.federation.task import Phase, Task

__all__ = ["FederatedTask", "FlatFederation", "HierarchicalFederation", "LearningSetup", "MultiTask", "Phase",
           "RoundSummary", "SplitTask", "Task", "make_task"]
