"""Typed scenario configuration, loaded from TOML, with errors that name the field and the fix."""

from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cosim.energy import DEVICE_PROFILES, DeviceProfile, device_profile
from cosim.payload import WireDtype
from cosim.schedulers import scheduler_config_class, scheduler_config_union, scheduler_names
from mobility.config import MobilityConfig, RsuConfig

BUILTIN_MODELS = ("minilm", "tiny-bert")
BUILTIN_DATASETS = ("sst2", "mrpc", "qnli", "rte")  # shipped in models/datasets


def builtin_or_directory(builtins: tuple[str, ...], alternative: str) -> AfterValidator:
    """Accept a built-in name or an existing directory, else say which names exist."""

    def check(value: str) -> str:
        if value in builtins or Path(value).is_dir():
            return value
        raise ValueError(f"must be one of {', '.join(builtins)} or {alternative}")

    return AfterValidator(check)


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class Section(BaseModel):
    """A scenario table: unknown keys are errors, values are frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulationConfig(Section):
    rounds: int = Field(30, ge=1)
    round_deadline_s: Positive = 10.0
    mobility_tick_s: Positive = 1.0
    start_s: NonNegative = 120.0  # SUMO warm-up: the first round starts once the network has filled


class ChannelConfig(Section):
    pathloss: Literal["simple", "umi", "uma", "v2v-highway", "v2v-urban"] = "simple"
    carrier_hz: Annotated[float, Field(ge=0.5e9, le=100e9)] = 5.9e9  # TR 38.901 validity range
    # the simple power-law model PL0·(d/d0)^-α and its shadowing (the 3GPP models take theirs from the tables)
    reference_loss_db: NonNegative = 38.0  # loss at the reference distance (free space at 1 m, 2 GHz ≈ 38 dB)
    reference_distance_m: Positive = 1.0
    exponent: Annotated[float, Field(ge=1.5, le=6.0)] = 3.0
    shadowing_std_db: NonNegative = 4.0
    shadowing_decorrelation_m: Positive = 10.0
    fading: Literal["rayleigh", "rician", "none"] = "rayleigh"
    # i.i.d. per tick; Doppler-correlated (speed, carrier); or i.i.d. per round, held through it (the seeds' model)
    fading_correlation: Literal["block", "jakes", "round"] = "block"
    rician_k_db: Annotated[float, Field(ge=-20, le=40)] = 9.0
    fading_sinusoids: int = Field(16, ge=4, le=256)
    noise_psd_dbm_per_hz: float = -174.0
    noise_figure_db: NonNegative = 9.0
    snr_gap_db: Annotated[float, Field(ge=0, le=20)] = 0.0
    max_spectral_efficiency: Positive = math.inf  # bit/s/Hz cap of the best MCS (7.40625 for NR 256QAM)
    vehicle_height_m: NonNegative = 1.5


class EnergyConfig(Section):
    """The on-board unit: a built-in profile, or `custom` with every field as given."""

    profile: Literal["custom", *DEVICE_PROFILES] = "custom"  # type: ignore[valid-type]
    tx_power_w: Positive = 0.2
    cycles_per_sample: Positive = 2e8
    cpu_hz: Positive = 2e9
    capacitance: Positive = 1e-28  # effective switched capacitance κ (J/cycle/Hz²)
    idle_power_w: NonNegative = 0.0
    battery_j: Positive = 2e4

    @model_validator(mode="after")
    def _profile_or_fields(self) -> EnergyConfig:
        clash = sorted(self.model_fields_set - {"profile"})
        if self.profile != "custom" and clash:
            raise ValueError(f"{', '.join(clash)} set beside profile '{self.profile}'; "
                             "remove them or use profile = 'custom'")
        return self

    def device(self) -> DeviceProfile:
        if self.profile != "custom":
            return device_profile(self.profile)
        return DeviceProfile("custom", **self.model_dump(exclude={"profile"}))


SPLIT_ONLY = ("server_lr", "head_lr", "server_optimizer")
FLAT_ONLY = ("optimizer", "lr", "local_steps", "compression")


class CompressionConfig(Section):
    """SOFT (seed 002, models.soft): each upload keeps round(density·r) of the r LoRA rank components per module,
    chosen by `selection`; a plan's density column overrides `density`. preset = "covariance" is TSFA's offline
    stage: the initial density (and an SGD learning rate) from the frozen base's features on `calibration_samples`
    training samples, replacing `density` (and `lr`; the rule: models.soft.OfflinePreset)."""

    density: Annotated[float, Field(gt=0, le=1)] = 1.0
    selection: Literal["norm", "random"] = "norm"  # top ‖A_i‖·‖B_:,i‖ (SOFT), or random-k
    orthogonal_weight: NonNegative = 0.0  # λ of the orthogonality regulariser in local training; 0 = off
    preset: Literal["none", "covariance"] = "none"
    calibration_samples: int = Field(256, ge=2)


class LearningConfig(Section):
    """What is fine-tuned and how. mode = "flat": each vehicle trains the whole LoRA model locally for `local_steps`
    with `optimizer`/`lr` and uploads the adapter (FedAvg). mode = "split" (seed 001): the vehicle keeps the embedding
    and its own head, the server the LoRA encoder; one mini-batch per round, the server steps the global LoRA with
    `server_optimizer`/`server_lr` on the participants' averaged gradient (the paper: plain SGD), each participant
    its head by SGD with `head_lr`. Each mode's own fields are errors in the other, so nothing is silently ignored."""

    mode: Literal["flat", "split"] = "flat"
    # "minilm" (packaged pretrained weights), "tiny-bert" (random, for tests) or a checkpoint dir
    model: Annotated[str, builtin_or_directory(BUILTIN_MODELS, "a Hugging Face checkpoint directory")] = "minilm"
    dataset: Annotated[str, builtin_or_directory(BUILTIN_DATASETS, "a directory with train and dev tables")] = "sst2"
    clients: int = Field(100, ge=1)
    samples_per_client: int = Field(64, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: Positive = 0.5
    max_length: int = Field(64, ge=8)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: Positive = 16.0
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_targets: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Positive = 1e-3
    batch_size: int = Field(16, ge=1)
    local_steps: int = Field(2, ge=1)
    eval_every: int = Field(5, ge=1)
    eval_samples: int = Field(872, ge=1)
    server_lr: Positive = 0.2  # measured on MiniLM + SST-2 (seed001-static): 0.5 can collapse, 0.1 is slower
    head_lr: Positive = 0.1  # 0.5 diverges for a vehicle scheduled every round (measured, same cell)
    server_optimizer: Literal["sgd", "adam"] = "sgd"
    wire_dtype: WireDtype = "float32"  # precision of every value on the air (payload bits per value)
    # "auto": bf16 matrix products where the hardware has them (CUDA; CPUs with AVX512-BF16/AMX), else float32
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    compression: CompressionConfig = CompressionConfig()  # flat mode only

    @model_validator(mode="after")
    def _fields_of_the_mode(self) -> LearningConfig:
        other = FLAT_ONLY if self.mode == "split" else SPLIT_ONLY
        clash = [name for name in other if name in self.model_fields_set]
        if clash:
            one = len(clash) == 1
            raise ValueError(f"{', '.join(clash)} {'is' if one else 'are'} not used when mode = '{self.mode}'; "
                             f"remove {'it' if one else 'them'} (split mode: {', '.join(SPLIT_ONLY)}; "
                             f"flat mode: {', '.join(FLAT_ONLY)})")
        return self


class TraceConfig(Section):
    vehicle_sample_s: Positive = 5.0


class Scenario(Section):
    name: str = "scenario"
    seed: int = Field(0, ge=0)
    simulation: SimulationConfig = SimulationConfig()
    mobility: MobilityConfig = MobilityConfig()
    rsu: RsuConfig = RsuConfig()
    channel: ChannelConfig = ChannelConfig()
    energy: EnergyConfig = EnergyConfig()
    learning: LearningConfig = LearningConfig()
    scheduler: scheduler_config_union() = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"name": "all-in"}, validate_default=True
    )
    trace: TraceConfig = TraceConfig()

    @model_validator(mode="after")
    def _tsfa_is_flat(self) -> Scenario:
        if self.scheduler.name == "tsfa" and self.learning.mode != "flat":
            raise ValueError("scheduler.name = 'tsfa' sparsifies flat LoRA uploads; set learning.mode = 'flat'")
        return self


class ScenarioError(ValueError):
    """A scenario that cannot run; the message lists every problem as `field.path: what is wrong`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read a TOML scenario, apply `key.path=value` overrides, validate everything at once."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(str(path), ["file not found; pass the path of a scenario .toml"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"not valid TOML ({exc})"]) from None
    for override in overrides or []:
        _apply_override(raw, override, str(path))
    return parse_scenario(raw, str(path))


def parse_scenario(raw: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(source, [_describe(error) for error in exc.errors()]) from None


def _apply_override(raw: dict[str, Any], override: str, source: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        problem = f"--set {override!r}: expected key.path=value, e.g. simulation.rounds=10"
        raise ScenarioError(source, [problem])
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string: --set scheduler.name=random
    *parents, leaf = key.strip().split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ScenarioError(source, [f"--set {key}: {part} is a value, not a table"])
    table[leaf] = value


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(error: dict[str, Any]) -> str:
    loc = _field_path(error["loc"])
    where = ".".join(str(part) for part in loc) or "scenario"
    kind, ctx, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind in _BOUNDS:
        (bound,) = ctx.values()
        return f"{where}: must be {_BOUNDS[kind]} {bound}, got {given}"
    if kind == "extra_forbidden":
        valid = _valid_keys(error["loc"][:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(valid)}"
        return f"{where}: unknown key; {hint}"
    if kind == "literal_error":
        return f"{where}: must be one of {ctx['expected']}, got {given!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        names = scheduler_names()
        tag = str(ctx.get("tag", ""))
        near = difflib.get_close_matches(tag, names, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        problem = f"unknown scheduler '{tag}'" if tag else "missing"
        return f"{where}.name: {problem}; {hint}(choose from {', '.join(names)})"
    if kind == "value_error":
        got = "" if isinstance(given, dict) else f", got {given!r}"
        return f"{where}: {error['msg'].removeprefix('Value error, ')}{got}"
    return f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}, got {given!r}"


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the tag pydantic inserts for a discriminated union (`scheduler.random.x` -> `scheduler.x`)."""
    if len(loc) > 1 and loc[0] == "scheduler" and scheduler_config_class(str(loc[1])) is not None:
        return (loc[0], *loc[2:])
    return loc


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at `loc` accepts (loc as pydantic reports it, union tags included)."""
    model: Any = Scenario
    for part in loc:
        if model is Scenario and part == "scheduler":
            model = None
        elif model is None:
            model = scheduler_config_class(str(part))
        else:
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) else None
    return list(model.model_fields) if model else []
