"""Where vehicles are: SUMO-driven mobility, RSU placement and serving-RSU association."""

from mobility.association import Association, HandoverEvent
from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, grid_scenario
from mobility.rsu import RsuLayout, grid_layout
from mobility.snapshot import Mobility, Snapshot
from mobility.sumo import SumoMobility

__all__ = [
    "Association",
    "HandoverEvent",
    "Mobility",
    "MobilityError",
    "RsuLayout",
    "Snapshot",
    "SumoFiles",
    "SumoMobility",
    "grid_layout",
    "grid_scenario",
]
