"""Typed scenario configuration, loaded from TOML, with errors that name the field and the fix."""

from __future__ import annotations

import codecs
import difflib
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cosim.energy import DEVICE_PROFILES, DeviceProfile, device_profile
from cosim.payload import WireDtype
from cosim.schedulers import (
    SchedulerImportError,
    load_user_scheduler,
    scheduler_config_union,
    scheduler_configs,
)
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


def printable(value: str) -> str:
    """Names end up in paths and tables: no NUL, newline or other control character."""
    if not value or any(not char.isprintable() for char in value):
        raise ValueError("must be non-empty printable text (no NUL, newline or other control character); rename it")
    return value


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
# Lr-like step sizes: above 10 every optimiser here diverges to NaN within a round.
StepSize = Annotated[float, Field(gt=0, le=10)]


class Section(BaseModel):
    """A scenario table: unknown keys are errors, values are frozen after loading. Strict: TOML `true` is not 1 and
    1.5 is not an integer; numbers are finite (NaN and ±inf are refused unless a field says otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


MAX_TICKS_PER_ROUND = 100_000  # a round that waits out its deadline still ends in seconds of wall time


class SimulationConfig(Section):
    """Bounds keep simulated time advancing: at most 100,000 rounds of at most a day and 100,000 mobility ticks,
    mobility refreshed every 10 ms to 60 s (a 1e-300 s tick would never reach the deadline), warm-up up to a day."""

    rounds: int = Field(30, ge=1, le=100_000)
    round_deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    mobility_tick_s: Annotated[float, Field(ge=0.01, le=60)] = 1.0
    start_s: Annotated[float, Field(ge=0, le=86_400)] = 120.0  # SUMO warm-up: the first round starts once filled
    checkpoint_every_rounds: int = Field(1, ge=0, le=100_000)  # what `cosim run --resume` continues from; 0: never

    @model_validator(mode="after")
    def _ticks_per_round(self) -> SimulationConfig:
        if self.round_deadline_s > MAX_TICKS_PER_ROUND * self.mobility_tick_s:
            raise ValueError(f"round_deadline_s / mobility_tick_s = {self.round_deadline_s / self.mobility_tick_s:.3g} "
                             f"mobility ticks per round, more than {MAX_TICKS_PER_ROUND:,}; raise mobility_tick_s "
                             f"or shorten round_deadline_s")
        return self


class ChannelConfig(Section):
    pathloss: Literal["simple", "umi", "uma", "v2v-highway", "v2v-urban"] = "simple"
    carrier_hz: Annotated[float, Field(ge=0.5e9, le=100e9)] = 5.9e9  # TR 38.901 validity range
    # the simple power-law model PL0·(d/d0)^-α and its shadowing (the 3GPP models take theirs from the tables)
    # loss at the reference distance (free space at 1 m, 2 GHz ≈ 38 dB)
    reference_loss_db: Annotated[float, Field(ge=0, le=200)] = 38.0
    reference_distance_m: Positive = 1.0
    exponent: Annotated[float, Field(ge=1.5, le=6.0)] = 3.0
    shadowing_std_db: Annotated[float, Field(ge=0, le=30)] = 4.0
    shadowing_decorrelation_m: Positive = 10.0
    fading: Literal["rayleigh", "rician", "none"] = "rayleigh"
    # i.i.d. per tick; Doppler-correlated (speed, carrier); or i.i.d. per round, held through it (the seeds' model)
    fading_correlation: Literal["block", "jakes", "round"] = "block"
    rician_k_db: Annotated[float, Field(ge=-20, le=40)] = 9.0
    fading_sinusoids: int = Field(16, ge=4, le=256)
    noise_psd_dbm_per_hz: Annotated[float, Field(ge=-230, le=-100)] = -174.0  # thermal noise at 290 K: -174
    noise_figure_db: Annotated[float, Field(ge=0, le=30)] = 9.0
    snr_gap_db: Annotated[float, Field(ge=0, le=20)] = 0.0
    # bit/s/Hz cap of the best MCS (7.40625 for NR 256QAM); inf (the default) = Shannon, no cap
    max_spectral_efficiency: Annotated[float, Field(gt=0, allow_inf_nan=True)] = math.inf
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


# Fields a `[[tasks]]` entry may set for itself (TaskConfig), with the same bounds as in `[learning]`.
DatasetName = Annotated[str, builtin_or_directory(BUILTIN_DATASETS, "a directory with train and dev tables")]
Clients = Annotated[int, Field(ge=1, le=1_000_000)]
SamplesPerClient = Annotated[int, Field(ge=1, le=1_000_000)]
Partition = Literal["iid", "dirichlet"]
DirichletAlpha = Annotated[float, Field(ge=0.01, le=1000)]  # below 0.01 numpy's draws degenerate
EvalSamples = Annotated[int, Field(ge=1)]

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
    dataset: DatasetName = "sst2"
    # clients × samples_per_client, max_length, lora_rank and lora_targets are checked against the data and the model
    # before anything loads (cosim/preflight.py)
    clients: Clients = 100
    samples_per_client: SamplesPerClient = 64
    partition: Partition = "iid"
    dirichlet_alpha: DirichletAlpha = 0.5
    max_length: int = Field(64, ge=8, le=8192)
    lora_rank: int = Field(8, ge=1, le=4096)
    lora_alpha: Annotated[float, Field(gt=0, le=4096)] = 16.0
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_targets: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: StepSize = 1e-3
    batch_size: int = Field(16, ge=1, le=65_536)
    local_steps: int = Field(2, ge=1, le=10_000)
    eval_every: int = Field(5, ge=1)
    eval_samples: EvalSamples = 872
    server_lr: StepSize = 0.2  # measured on MiniLM + SST-2 (seed001-static): 0.5 can collapse, 0.1 is slower
    head_lr: StepSize = 0.1  # 0.5 diverges for a vehicle scheduled every round (measured, same cell)
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


HIERARCHICAL_ONLY = ("global_every_rounds", "backhaul_latency_s", "backhaul_rate_bps")


class FederationConfig(Section):
    """Who aggregates. "flat": vehicles → serving RSU → server, the RSUs forwarding every update over an ideal
    backhaul. "hierarchical": each RSU averages the updates that reached it into its own edge model every round, and
    every `global_every_rounds` rounds (κ) the RSUs send their edge models to the server over a backhaul link of
    `backhaul_latency_s` + bits / `backhaul_rate_bps` each way (cosim.federation.hierarchical)."""

    aggregation: Literal["flat", "hierarchical"] = "flat"
    global_every_rounds: int = Field(1, ge=1, le=100_000)
    backhaul_latency_s: Annotated[float, Field(ge=0, le=60)] = 0.005  # one way, RSU ↔ server
    backhaul_rate_bps: Annotated[float, Field(gt=0, allow_inf_nan=True)] = 1e9  # per RSU link; inf: no transfer time

    @model_validator(mode="after")
    def _fields_of_the_aggregation(self) -> FederationConfig:
        clash = [name for name in HIERARCHICAL_ONLY if name in self.model_fields_set]
        if self.aggregation == "flat" and clash:
            raise ValueError(f"{', '.join(clash)} only apply to aggregation = 'hierarchical'; set that or remove "
                             f"{'it' if len(clash) == 1 else 'them'}")
        return self


class TaskConfig(Section):
    """One of several fine-tuning tasks on the one frozen base (`[[tasks]]`, flat mode): its own data, client shards,
    LoRA adapters, head and evaluation. A field it leaves out is `[learning]`'s; the model, LoRA settings, optimiser
    and batch are shared by all tasks (one payload, and clients of every task stacked into the same passes)."""

    name: Annotated[str, AfterValidator(printable)]
    dataset: DatasetName
    clients: Clients | None = None
    samples_per_client: SamplesPerClient | None = None
    partition: Partition | None = None
    dirichlet_alpha: DirichletAlpha | None = None
    eval_samples: EvalSamples | None = None
    budget_weight: Positive = 1.0  # the task's priority in the split of [energy_budget] (cosim/budget.py)

    def learning(self, base: LearningConfig) -> LearningConfig:
        """`[learning]` with this task's own fields."""
        own = self.model_dump(exclude={"name", "budget_weight"}, exclude_none=True)
        return base.model_copy(update=own)


def head_width_problem(index: int, labels: int, first_labels: int) -> str | None:
    """The tasks share one head width (one payload, one batched pass): the one message for a task whose dataset has
    another number of labels than the first's (validation and task loading both use it)."""
    if labels == first_labels:
        return None
    return (f"tasks[{index}].dataset: {labels} labels, the first task has {first_labels}; tasks share one head "
            "width, give them datasets with the same number of labels")


class EnergyBudgetConfig(Section):
    """The server's energy budget, split among the tasks every `period_rounds` rounds by difficulty and utilisation
    (the formula: cosim/budget.py); each task's share becomes a per-round, per-client budget."""

    total_j: Positive  # what all participants of all tasks may spend in one period
    period_rounds: int = Field(5, ge=1, le=100_000)
    difficulty_exponent: Annotated[float, Field(ge=0, le=10)] = 1.0  # a
    utilisation_exponent: Annotated[float, Field(ge=0, le=10)] = 1.0  # b
    min_share: Annotated[float, Field(ge=0, lt=1)] = 0.1  # of the total, for every task: none starves


class TraceConfig(Section):
    vehicle_sample_s: Positive = 5.0


class Scenario(Section):
    name: Annotated[str, AfterValidator(printable)] = "scenario"
    seed: int = Field(0, ge=0, le=2**63 - 1)  # torch seeds are 64-bit
    simulation: SimulationConfig = SimulationConfig()
    mobility: MobilityConfig = MobilityConfig()
    rsu: RsuConfig = RsuConfig()
    channel: ChannelConfig = ChannelConfig()
    energy: EnergyConfig = EnergyConfig()
    learning: LearningConfig = LearningConfig()
    federation: FederationConfig = FederationConfig()
    scheduler: scheduler_config_union() = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"name": "all-in"}, validate_default=True
    )
    trace: TraceConfig = TraceConfig()
    tasks: list[TaskConfig] = Field(default_factory=list)  # several tasks at once (flat mode); empty: [learning]'s
    energy_budget: EnergyBudgetConfig | None = None  # None: a rank scheduler's own per-client energy_budget_j

    @model_validator(mode="after")
    def _scheduler_fits_learning(self) -> Scenario:
        problems = self.scheduler.learning_problems(self.learning) + self._task_problems()
        if self.federation.aggregation == "hierarchical" and self.learning.mode == "split":
            problems.append('federation.aggregation: "hierarchical" needs learning.mode = "flat" (split LoRA trains '
                            'one adapter on the server); use aggregation = "flat" or mode = "flat"')
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _task_problems(self) -> list[str]:
        problems = []
        if "tasks" in self.model_fields_set and not self.tasks:
            problems.append("tasks: empty; add [[tasks]] entries (name, dataset) or remove the key")
        if self.tasks and self.learning.mode == "split":
            problems.append("tasks: several tasks run in flat mode only; set learning.mode = 'flat' or remove "
                            "[[tasks]]")
        if self.tasks and self.learning.compression.preset != "none":
            problems.append("tasks: learning.compression.preset presets one learning rate per task, but the tasks "
                            "share one trainer; use preset = 'none' with [[tasks]]")
        first: dict[str, int] = {}
        for index, task in enumerate(self.tasks):
            if task.name in first:
                problems.append(f"tasks[{index}].name: '{task.name}' is already tasks[{first[task.name]}]'s; give "
                                "every task its own name")
            first.setdefault(task.name, index)
        budget = self.energy_budget
        if budget is not None and budget.min_share * max(len(self.tasks), 1) > 1:
            problems.append(f"energy_budget.min_share: {budget.min_share} for each of {len(self.tasks)} tasks exceeds "
                            f"the whole budget; lower it to at most {1 / len(self.tasks):.4g}")
        if budget is not None and "energy_budget_j" in self.scheduler.model_fields_set:
            problems.append("scheduler.energy_budget_j: [energy_budget] sets every client's budget; remove one of "
                            "the two")
        return problems

    def task_learning(self) -> list[LearningConfig]:
        """Each task's learning config (`[learning]` with the task's own fields); one, `[learning]`, without
        [[tasks]]."""
        return [task.learning(self.learning) for task in self.tasks] or [self.learning]


class ScenarioError(ValueError):
    """A scenario that cannot run; the message lists every problem as `field.path: what is wrong`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = [" ".join(problem.splitlines()) for problem in problems]  # one line, whatever a loader said
        super().__init__(f"{source}: " + "; ".join(self.problems))


# Keys that choose which table schema applies, with the kind a table without the key has.
KIND_KEYS = {"scheduler.name": None, "mobility.network.kind": "grid", "mobility.demand.kind": "random"}


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read a TOML scenario, apply `key.path=value` overrides, validate everything at once. Overrides that choose
    a table's kind (`scheduler.name`, `mobility.network.kind`, `mobility.demand.kind`) go first, and choosing another
    kind replaces the file's table (its fields belong to the old kind): `--set scheduler.name=all-in` works on a file
    whose scheduler is random; set the new kind's own fields with further overrides."""
    path = Path(path)
    raw = read_toml(path)
    for override in sorted(overrides or [], key=lambda text: text.partition("=")[0].strip() not in KIND_KEYS):
        _apply_override(raw, override, str(path))
    return parse_scenario(raw, str(path))


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML table in `path`, or a ScenarioError that says what is wrong with the file and how to fix it. A UTF-8
    byte-order mark (some Windows editors write one) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(str(path), ["file not found; pass the path of a scenario .toml"]) from None
    except IsADirectoryError:
        inside = ", ".join(sorted(child.name for child in path.glob("*.toml"))[:5]) or "none"
        raise ScenarioError(str(path), [f"is a directory; pass a scenario .toml file (.toml files in it: {inside})"]
                            ) from None
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot be read ({exc.strerror}); check the path and its permissions"]
                            ) from None
    try:
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), [utf8_problem(data, exc)]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"not valid TOML ({exc}); fix the syntax there"]) from None


def utf8_problem(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, and how to fix it."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "is UTF-16 text; save it as UTF-8"
    line = data[: exc.start].count(b"\n") + 1
    return f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"


def parse_scenario(raw: dict[str, Any], source: str = "scenario") -> Scenario:
    scheduler = raw.get("scheduler")
    try:
        load_user_scheduler(scheduler.get("name") if isinstance(scheduler, dict) else None)
    except SchedulerImportError as exc:
        raise ScenarioError(source, [f"scheduler.name: {exc}"]) from None
    if Scenario.model_fields["scheduler"].annotation != scheduler_configs():  # a user's scheduler joined
        Scenario.model_fields["scheduler"].annotation = scheduler_configs()
        Scenario.model_rebuild(force=True)
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
            raise ScenarioError(source, [f"{key.strip()}: {part} is a value, not a table; drop one of the two --set"])
    if key.strip() in KIND_KEYS and table.get(leaf, KIND_KEYS[key.strip()]) != value:
        table.clear()
    table[leaf] = value


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
# Strict types: what the field wants, said as TOML would write it.
_TYPES = {"int_type": "an integer (e.g. 3)", "float_type": "a number (e.g. 2.5)", "bool_type": "true or false",
          "string_type": 'a string in quotes (e.g. "text")', "list_type": "a list (e.g. [1, 2])",
          "model_type": "a table", "dict_type": "a table", "model_attributes_type": "a table"}


def _describe(error: dict[str, Any]) -> str:
    loc, table = _resolve(error["loc"])
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "scenario"
    kind, ctx, given = error["type"], error.get("ctx", {}), error.get("input")
    if kind in _BOUNDS:
        (bound,) = ctx.values()
        return f"{where}: must be {_BOUNDS[kind]} {bound}, got {given}"
    if kind == "finite_number":
        return f"{where}: must be a finite number, got {given}; NaN and inf are not allowed here"
    if kind in _TYPES:
        return f"{where}: must be {_TYPES[kind]}, got {_toml(given)}"
    if kind == "extra_forbidden":
        valid = list(_resolve(error["loc"][:-1])[1].model_fields)
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(valid)}"
        return f"{where}: unknown key; {hint}"
    if kind == "missing":
        return f"{where}: required; add it"
    if kind == "literal_error":
        return f"{where}: must be one of {ctx['expected']}, got {given!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        key, tags = _union_tags(table)
        tag = str(ctx.get("tag", ""))
        near = difflib.get_close_matches(tag, tags, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        problem = f"unknown {loc[-1]} '{tag}'" if tag else "missing"
        extra = ", or your own module:Class" if where == "scheduler" else ""
        return f"{where}.{key}: {problem}; {hint}(choose from {', '.join(tags)}{extra})"
    if kind == "value_error":
        message = error['msg'].removeprefix('Value error, ')
        if not loc:  # a check across tables names its fields itself
            return message
        got = "" if isinstance(given, dict) else f", got {given!r}"
        return f"{where}: {message}{got}"
    return f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}, got {given!r}"


def _toml(value: Any) -> str:
    """A value as the user wrote it in TOML (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


class _Union:
    """The options of a tagged-union table (`[scheduler]`, `mobility.network`, `mobility.demand`)."""

    def __init__(self, options: list[type[BaseModel]]) -> None:
        self.options = options
        self.model_fields: dict[str, Any] = {}  # which keys are valid depends on the tag


def _resolve(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """A pydantic error location as the user's field path, without the tags pydantic inserts for tagged unions
    (`scheduler.random.x` -> `scheduler.x`, `mobility.network.file.path` -> `mobility.network.path`), and the model
    of the table it ends in (a `_Union` at a union, None past a value)."""
    path: list[Any] = []
    model: Any = Scenario
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        path.append(part)
        if isinstance(part, int):  # an item of a list of tables (`tasks[1]`): still that table
            continue
        field = model.model_fields.get(part) if model is not None else None
        options = _tables(field.annotation) if field is not None else []
        model = options[0] if len(options) == 1 else _Union(options) if options else None
        if isinstance(model, _Union) and parts:
            chosen = [option for option in options if str(parts[0]) in _union_tags(option)[1]]
            if chosen:
                parts.pop(0)
                model = chosen[0]
    return tuple(path), model


def _tables(annotation: Any) -> list[type[BaseModel]]:
    """The table models an annotation admits (unwrapping Annotated, unions and Optional)."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [model for arg in get_args(annotation) for model in _tables(arg)]


def _union_tags(table: Any) -> tuple[str, list[str]]:
    """The discriminating key of a tagged union (or of one of its options) and the tags it takes."""
    options = table.options if isinstance(table, _Union) else [table] if table is not None else []
    key = "name" if any("name" in option.model_fields for option in options) else "kind"
    return key, [tag for option in options for tag in get_args(option.model_fields[key].annotation)]
