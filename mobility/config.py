"""The `[mobility]` and `[rsu]` tables of a scenario, and how they become a running mobility source and RSUs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mobility.netgen import grid_scenario
from mobility.rsu import RsuLayout, grid_layout
from mobility.sumo import SumoMobility

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridNetworkConfig(Table):
    kind: Literal["grid"] = "grid"
    junctions: int = Field(5, ge=2)
    edge_length_m: Positive = 200.0
    lanes: int = Field(1, ge=1)


class DemandConfig(Table):
    trip_period_s: Positive = 1.0
    end_s: Positive = 3600.0


class MobilityConfig(Table):
    backend: Literal["libsumo", "traci"] = "libsumo"
    step_length_s: Positive = 1.0
    network: GridNetworkConfig = GridNetworkConfig()
    demand: DemandConfig = DemandConfig()


class RsuConfig(Table):
    layout: Literal["grid"] = "grid"
    count: int = Field(4, ge=1)
    radius_m: Positive = 300.0
    height_m: NonNegative = 10.0
    bandwidth_hz: Positive = 20e6
    tx_power_w: Positive = 1.0
    hysteresis_db: NonNegative = 3.0
    time_to_trigger_s: NonNegative = 0.0


def open_mobility(config: MobilityConfig, cache_dir: Path, seed: int) -> SumoMobility:
    """Build (or reuse from the cache) the network and demand, then start SUMO on them."""
    net, demand = config.network, config.demand
    files = grid_scenario(cache_dir / "sumo", junctions=net.junctions, edge_length_m=net.edge_length_m,
                          lanes=net.lanes, trip_period_s=demand.trip_period_s, end_s=demand.end_s, seed=seed)
    return SumoMobility(files, step_length_s=config.step_length_s, seed=seed, backend=config.backend)


def place_rsus(config: RsuConfig, bounds: tuple[float, float, float, float]) -> RsuLayout:
    rows, cols = grid_shape(config.count)
    return grid_layout(bounds, rows=rows, cols=cols, radius_m=config.radius_m, height_m=config.height_m,
                       bandwidth_hz=config.bandwidth_hz)


def grid_shape(count: int) -> tuple[int, int]:
    """The most square rows × cols factorisation of `count` RSUs."""
    rows = math.isqrt(count)
    while count % rows:
        rows -= 1
    return rows, count // rows
