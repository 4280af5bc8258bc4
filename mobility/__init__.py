"""Where vehicles are: live SUMO or trace replay, networks and demand, RSU placement and serving-RSU association."""

from mobility.association import Association, HandoverEvent
from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, grid_scenario
from mobility.pipelined import PipelinedSumo
from mobility.rsu import (
    RsuLayout,
    dwell_time_s,
    grid_layout,
    network_uncovered_fraction,
    uncovered_fraction,
)
from mobility.snapshot import Mobility, Snapshot
from mobility.sumo import SumoMobility
from mobility.trace import TraceMobility, read_trace, record_trace

__all__ = [
    "Association",
    "HandoverEvent",
    "Mobility",
    "MobilityError",
    "PipelinedSumo",
    "RsuLayout",
    "Snapshot",
    "SumoFiles",
    "SumoMobility",
    "TraceMobility",
    "dwell_time_s",
    "grid_layout",
    "grid_scenario",
    "network_uncovered_fraction",
    "read_trace",
    "record_trace",
    "uncovered_fraction",
]
