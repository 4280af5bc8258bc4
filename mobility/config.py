"""The `[mobility]` and `[rsu]` tables of a scenario, and how they become a running mobility source and RSUs.

Relative file paths are resolved against the working directory, then against the project root (the directory holding
the `mobility` package), so the shipped data (`mobility/data/...`) is found from anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, model_validator

from mobility.association import L3_FILTER_COEFFICIENTS
from mobility.checks import VEHICLE_CLASSES, demand_problems, rsu_problems
from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, cached, generated_network, osm_network, random_demand
from mobility.pipelined import PipelinedSumo
from mobility.rsu import RsuLayout, file_layout, grid_layout, junction_layout, net_bounds, spaced_layout
from mobility.static import StaticDiskMobility
from mobility.sumo import SumoMobility
from mobility.sumocfg import SumoConfigFile, controlled_option_problems, option_problems, read_sumo_config
from mobility.trace import TraceMobility, record_trace, trace_span

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _existing_file(path: Path) -> Path:
    """Resolve a scenario path (see the module docstring); a missing file is a validation error naming the field."""
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([Path.cwd() / path, _PROJECT_ROOT / path]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ValueError(f"file not found: {' or '.join(str(c) for c in candidates)}; fix the path")


ExistingFile = Annotated[Path, Strict(False), AfterValidator(_existing_file)]  # a TOML string


class Table(BaseModel):
    """Strict (TOML `true` is not 1) and finite (NaN, ±inf refused), like the scenario's own tables."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class GridNetworkConfig(Table):
    """netgenerate --grid: junctions x junctions, edge_length_m apart."""

    kind: Literal["grid"] = "grid"
    junctions: int = Field(5, ge=2, le=500)
    edge_length_m: Positive = 200.0
    lanes: int = Field(1, ge=1)


class SpiderNetworkConfig(Table):
    """netgenerate --spider: arms radial roads crossed by circles rings space_m apart."""

    kind: Literal["spider"]
    arms: int = Field(6, ge=3, le=360)
    circles: int = Field(5, ge=1, le=500)
    space_m: Positive = 100.0
    lanes: int = Field(1, ge=1)


class RandomNetworkConfig(Table):
    """netgenerate --rand: a random planar network grown for `iterations` edges."""

    kind: Literal["random"]
    iterations: int = Field(100, ge=1, le=100_000)
    edge_length_m: Positive = 100.0
    lanes: int = Field(1, ge=1)


class FileNetworkConfig(Table):
    """A SUMO network the user provides (.net.xml or .net.xml.gz)."""

    kind: Literal["file"]
    path: ExistingFile


class OsmNetworkConfig(Table):
    """An OpenStreetMap extract, converted with netconvert (cached by the extract's content)."""

    kind: Literal["osm"]
    path: ExistingFile


def _kind_or(default: str) -> Discriminator:
    """Tables without `kind` take the default, as in scenarios written before the other kinds existed."""
    return Discriminator(lambda v: v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", default))


NetworkConfig = Annotated[
    Annotated[GridNetworkConfig, Tag("grid")]
    | Annotated[SpiderNetworkConfig, Tag("spider")]
    | Annotated[RandomNetworkConfig, Tag("random")]
    | Annotated[FileNetworkConfig, Tag("file")]
    | Annotated[OsmNetworkConfig, Tag("osm")],
    _kind_or("grid"),
]


class RandomDemandConfig(Table):
    """randomTrips + duarouter: one trip every trip_period_s between begin_s and end_s."""

    kind: Literal["random"] = "random"
    trip_period_s: Annotated[float, Field(ge=0.01)] = 1.0  # 100 trips a second at most: generation must end
    begin_s: NonNegative = 0.0
    end_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0

    @model_validator(mode="after")
    def _window(self) -> RandomDemandConfig:
        if self.begin_s >= self.end_s:
            raise ValueError(f"begin_s = {self.begin_s:g} must be before end_s = {self.end_s:g}; raise end_s")
        return self


class RoutesDemandConfig(Table):
    """The user's route files, loaded in order (put vehicle-type files first)."""

    kind: Literal["routes"]
    files: list[ExistingFile] = Field(min_length=1)


DemandConfig = Annotated[
    Annotated[RandomDemandConfig, Tag("random")] | Annotated[RoutesDemandConfig, Tag("routes")],
    _kind_or("random"),
]


class StaticDiskConfig(Table):
    """source = "static-disk": the seed papers' setting, devices uniform in a disk around one server."""

    devices: int = Field(20, ge=1, le=100_000)
    radius_m: Positive = 500.0


class MobilityConfig(Table):
    source: Literal["sumo", "trace", "static-disk"] = "sumo"
    # A scenario as its authors ship it: net, routes, additionals, begin, end and step length come from the
    # .sumocfg (its other options apply too); fields set here override it.
    sumo_config: ExistingFile | None = None
    sumo_options: list[str] = Field(default_factory=list)  # extra SUMO options, e.g. ["--ignore-route-errors"]
    begin_s: NonNegative | None = None  # SUMO's start time (--begin); default: the .sumocfg's begin, else 0
    vehicle_classes: list[Literal[VEHICLE_CLASSES]] = Field(default_factory=list)  # type: ignore[valid-type]
    # Save SUMO's state at simulation.start_s once (cached by content) and start every run from it.
    warm_start: bool = True
    disk: StaticDiskConfig = StaticDiskConfig()
    trace: ExistingFile | None = None  # source = "trace": SUMO FCD .xml[.gz], .csv or .parquet
    backend: Literal["libsumo", "traci"] = "libsumo"
    gui: bool = False  # launch sumo-gui (backend = "traci")
    remote: str | None = Field(None, pattern=r"^[^:\s]+:\d+$")  # "host:port" of a SUMO started elsewhere (traci)
    step_length_s: Annotated[float, Field(ge=0.001, le=60)] = 1.0  # SUMO's clock has millisecond resolution
    scale: Annotated[float, Field(gt=0, le=100)] = 1.0  # SUMO --scale: multiplies the demand
    time_to_teleport_s: float = 300.0  # SUMO's jam resolution; <= 0 disables teleports
    network: NetworkConfig = GridNetworkConfig()
    demand: DemandConfig = RandomDemandConfig()
    additional: list[ExistingFile] = Field(default_factory=list)  # e.g. traffic-light programs

    @model_validator(mode="after")
    def _consistent(self) -> MobilityConfig:
        if self.source == "trace" and self.trace is None:
            raise ValueError('source = "trace" needs trace = "path/to/trace.parquet" (or .csv, FCD .xml)')
        if (self.gui or self.remote) and self.backend != "traci":
            raise ValueError('gui and remote need backend = "traci" (libsumo runs SUMO in-process, headless)')
        if self.sumo_config is not None and {"network", "demand"} & self.model_fields_set:
            raise ValueError("sumo_config names the network and the demand; remove network and demand")
        problems = controlled_option_problems(self.sumo_options)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def net_file_given(self) -> Path | None:
        """The user's own net file, if the scenario names one (a trace can use it for junction RSUs)."""
        if self.sumo_config is not None:
            return read_sumo_config(self.sumo_config).files.net
        return self.network.path if isinstance(self.network, FileNetworkConfig) else None


class RsuConfig(Table):
    layout: Literal["grid", "junctions", "file"] = "grid"
    count: int = Field(4, ge=1, le=10_000)  # grid (unless spacing_m) and junctions
    spacing_m: Positive | None = None  # grid: about this far apart instead of `count`
    min_separation_m: NonNegative = 0.0  # junctions: skip busy junctions closer than this to a chosen one
    file: ExistingFile | None = None  # layout = "file": CSV x, y[, radius_m, height_m, bandwidth_hz]
    radius_m: Positive = 300.0
    height_m: NonNegative = 10.0
    bandwidth_hz: Positive = 20e6
    tx_power_w: Positive = 1.0  # what vehicles measure to pick their RSU, and the downlink's power when spread
    # The power behind a vehicle's downlink share: "spread" = tx_power_w spread evenly over the band; "reciprocal" =
    # the vehicle's own uplink power, so both directions run at one rate (seed 001's delay model τ = L_k/R_k, where
    # L_k counts the features sent back too).
    downlink: Literal["spread", "reciprocal"] = "spread"
    # Layer-3 filter of RSRP before hysteresis and time-to-trigger (3GPP TS 38.331 §5.5.3.2 filterCoefficient):
    # F = (1 − a)·F + a·M with a = 1/2^(k/4) per 200 ms of measurements; 0 = no filter. 38.331's default fc4 (memory
    # ≈ 0.3 s) averages fast fading out of raw samples, but the RSRP here is already the large-scale power, whose
    # shadowing changes over its decorrelation distance: fc11 remembers ≈ 1.35 s, the time to drive ~20 m at 50 km/h.
    l3_filter_k: Literal[L3_FILTER_COEFFICIENTS] = 11  # type: ignore[valid-type]
    hysteresis_db: NonNegative = 3.0
    time_to_trigger_s: NonNegative = 0.0
    handover_interruption_s: NonNegative = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> RsuConfig:
        if self.layout == "file" and self.file is None:
            raise ValueError('layout = "file" needs file = "path/to/rsus.csv" (columns x, y[, radius_m, ...])')
        return self


def sumo_files(config: MobilityConfig, cache_dir: Path, seed: int) -> SumoFiles:
    """The network and demand SUMO will run, built into (or reused from) the content-hash cache."""
    if config.sumo_config is not None:
        files = read_sumo_config(config.sumo_config).files
        return SumoFiles(net=files.net, routes=files.routes, additional=files.additional + tuple(config.additional))
    cache = Path(cache_dir) / "sumo"
    network = config.network
    if isinstance(network, FileNetworkConfig):
        net = network.path
    elif isinstance(network, OsmNetworkConfig):
        net = osm_network(cache, network.path)
    else:
        options = network.model_dump(exclude={"kind", "lanes"})
        net = generated_network(cache, network.kind, lanes=network.lanes, seed=seed, **options)
    demand = config.demand
    if isinstance(demand, RoutesDemandConfig):
        routes = tuple(demand.files)
    else:
        routes = (random_demand(cache, net, trip_period_s=demand.trip_period_s, begin_s=demand.begin_s,
                                end_s=demand.end_s, seed=seed),)
    return SumoFiles(net=net, routes=routes, additional=tuple(config.additional))


def _sumo_config(config: MobilityConfig) -> SumoConfigFile | None:
    return read_sumo_config(config.sumo_config) if config.sumo_config is not None else None


def begin_s(config: MobilityConfig) -> float:
    """When SUMO starts: mobility.begin_s, else the .sumocfg's begin, else 0."""
    cfg = _sumo_config(config)
    if config.begin_s is not None:
        return config.begin_s
    return cfg.begin_s if cfg is not None and cfg.begin_s is not None else 0.0


def problems(config: MobilityConfig, *, window_s: tuple[float, float], cache_dir: Path, seed: int,
             rsu: RsuConfig | None = None) -> list[str]:
    """Why a run over simulated times window_s (simulation.start_s to its last possible round end) would be empty
    or fail late: one line per problem, naming the field to change. Empty when the run can go ahead."""
    start_s, end_s = window_s
    found: list[str] = []
    net: Path | None = None
    if config.source == "trace":
        assert config.trace is not None  # guaranteed by MobilityConfig validation
        first, last = trace_span(config.trace)
        if first > start_s or last < end_s:
            found.append(f"mobility.trace: {config.trace.name} covers {first:g}-{last:g} s but the run needs "
                         f"{start_s:g}-{end_s:g} s (simulation.start_s to start_s + rounds × round_deadline_s); "
                         "record a longer trace or lower simulation.rounds")
        if config.vehicle_classes:
            found.append("mobility.vehicle_classes: a trace holds the vehicles it was recorded with; set the "
                         "classes when recording and remove them here")
        net = config.net_file_given
        bounds = TraceMobility.bounds_of(config.trace, net)
    elif config.source == "sumo" and not config.remote:
        found += option_problems(config.sumo_options)
        files = sumo_files(config, cache_dir, seed)
        begin, cfg = begin_s(config), _sumo_config(config)
        if start_s < begin:
            found.append(f"simulation.start_s = {start_s:g} s is before SUMO begins (mobility.begin_s = {begin:g} s);"
                         f" set simulation.start_s >= {begin:g}")
        if cfg is not None and cfg.end_s is not None and cfg.end_s < end_s:
            found.append(f"mobility.sumo_config: its <end value={cfg.end_s:g}> stops SUMO before the run's end at "
                         f"{end_s:g} s; lower simulation.rounds or raise <end> in {cfg.path.name}")
        found += demand_problems(files, begin_s=max(begin, 0.0), end_s=end_s, classes=config.vehicle_classes)
        net = files.net
        bounds = net_bounds(net)
    else:
        return found
    if rsu is not None and not found:
        found += rsu_problems(place_rsus(rsu, bounds, net), bounds, net)
    return found


def open_mobility(config: MobilityConfig, cache_dir: Path, seed: int, log_dir: Path | None = None, *,
                  window_s: tuple[float, float] | None = None,
                  rsu: RsuConfig | None = None) -> PipelinedSumo | TraceMobility | StaticDiskMobility:
    """Start the scenario's mobility source: live SUMO on cached network and demand (in a worker process that steps
    ahead while the simulation works), a trace replay, or the static disk of the seed papers. Given the run's window
    (and its RSUs), first refuse a run that `problems` finds would be empty; with warm_start, SUMO starts from its
    state at window_s[0], saved once per content. `log_dir` holds SUMO's error log while it runs."""
    if window_s is not None:
        found = problems(config, window_s=window_s, cache_dir=cache_dir, seed=seed, rsu=rsu)
        if found:
            raise MobilityError("\n".join(found))
    if config.source == "static-disk":
        return StaticDiskMobility(config.disk.devices, config.disk.radius_m, seed)
    if config.source == "trace":
        assert config.trace is not None  # guaranteed by MobilityConfig validation
        return TraceMobility(config.trace, net_file=config.net_file_given)
    if config.remote:
        host, port = config.remote.rsplit(":", 1)
        return PipelinedSumo(None, step_length_s=config.step_length_s, seed=seed, backend=config.backend,
                             remote=(host, int(port)), log_dir=log_dir)
    files = sumo_files(config, cache_dir, seed)
    cfg = _sumo_config(config)
    # Fields the scenario leaves unset defer to the .sumocfg.
    inherit = cfg is not None
    step_s = config.step_length_s
    if inherit and "step_length_s" not in config.model_fields_set and cfg.step_length_s is not None:
        step_s = cfg.step_length_s
    launch = {
        "step_length_s": step_s, "seed": seed, "backend": config.backend, "gui": config.gui,
        "time_to_teleport_s": None if inherit and "time_to_teleport_s" not in config.model_fields_set
        else config.time_to_teleport_s,
        "scale": None if inherit and "scale" not in config.model_fields_set else config.scale,
        "config_file": cfg.path if cfg else None, "begin_s": begin_s(config), "options": config.sumo_options,
        "vehicle_classes": config.vehicle_classes,
    }
    state = None
    if config.warm_start and window_s is not None and window_s[0] > launch["begin_s"]:
        state = _warm_state(files, launch, until_s=window_s[0], cache_dir=Path(cache_dir) / "sumo")
    return PipelinedSumo(files, **launch, load_state=state, log_dir=log_dir)


def _warm_state(files: SumoFiles, launch: dict, *, until_s: float, cache_dir: Path) -> Path:
    """SUMO's state at until_s, simulated once and then reused: cached by the content of every input and every
    setting SUMO runs with (not the backend, the GUI or which vehicles snapshots keep), so any change simulates it
    afresh."""
    settings = {k: v for k, v in launch.items() if k not in ("gui", "backend", "vehicle_classes")}

    def build(out: Path) -> None:
        with SumoMobility(files, **settings) as warm:
            warm.advance(until_s)
            warm.save_state(out / "state.sbx")

    inputs = [files.net, *files.routes, *files.additional]
    if launch["config_file"] is not None:
        inputs.append(launch["config_file"])
    params = {"kind": "state", "until_s": float(until_s),
              **{k: str(v) if isinstance(v, Path) else list(v) if k == "options" else v for k, v in settings.items()}}
    return cached(cache_dir, params, inputs, build, "state.sbx")


def place_rsus(config: RsuConfig, bounds: tuple[float, float, float, float],
               net_file: Path | None = None) -> RsuLayout:
    """RSUs for the scenario: pass `mobility.bounds(), mobility.net_file`. Junction placement needs the net file
    (live SUMO always has one; a trace replay has one when mobility.network names a file)."""
    common = {"radius_m": config.radius_m, "height_m": config.height_m, "bandwidth_hz": config.bandwidth_hz}
    if config.layout == "file":
        assert config.file is not None  # guaranteed by RsuConfig validation
        return file_layout(config.file, **common)
    if config.layout == "junctions":
        if net_file is None:
            raise MobilityError('rsu.layout = "junctions" needs a road network; a trace replay has none unless '
                                '[mobility] network = { kind = "file", path = "....net.xml" } names it')
        return junction_layout(net_file, count=config.count, min_separation_m=config.min_separation_m, **common)
    if config.spacing_m is not None:
        return spaced_layout(bounds, spacing_m=config.spacing_m, **common)
    rows, cols = grid_shape(config.count)
    return grid_layout(bounds, rows=rows, cols=cols, **common)


def grid_shape(count: int) -> tuple[int, int]:
    """The most square rows × cols factorisation of `count` RSUs."""
    rows = math.isqrt(count)
    while count % rows:
        rows -= 1
    return rows, count // rows


def record_scenario(config: MobilityConfig, cache_dir: Path, seed: int, out: Path, *, start_s: float, tick_s: float,
                    duration_s: float) -> tuple[int, int]:
    """Record the scenario's mobility to `out` (what `cosim mobility record` runs); return (rows, vehicles)."""
    with open_mobility(config, cache_dir, seed, window_s=(start_s, start_s + duration_s)) as mobility:
        return record_trace(mobility, out, start_s=start_s, tick_s=tick_s, duration_s=duration_s)
