"""Studies: many runs of one base scenario (schedulers × varied fields × seeds), each an ordinary run directory,
run in parallel on a local process pool or on Ray, summed up in a catalogue that is rewritten as runs finish.

A run is keyed by a hash of its scenario (after every override) and of the code that runs it, and lives in
`<study>/runs/<key>`: a re-run skips the runs whose manifest says complete, and two points of the study that come to
the same scenario (All-in at every τ̄, which it ignores) share one run. Seeds pair the runs: every component draws
from the scenario seed's own streams, so within a seed every scheduler faces the same cell, data split and fading.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import itertools
import json
import math
import os
import shutil
import sys
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cosim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from cosim.schedulers import load_user_scheduler, scheduler_config_class, scheduler_source
from cosim.trace import SCHEMA, atomic_write_bytes, read_run

CATALOGUE = "catalogue.parquet"
STUDY = "study.json"
PACKAGES = ("cosim", "mobility", "models")  # the code a run's results depend on


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpus: float = Field(1.0, gt=0)  # per run: a Ray task's request, and torch's thread count
    gpus: float = Field(0.0, ge=0)  # per run, Ray only


class StudyConfig(BaseModel):
    """A study file: the base scenario, what varies, which schedulers and seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = "study"
    scenario: Path  # relative to the study file
    seeds: list[int] | None = Field(None, min_length=1)  # default: the scenario's seed
    overrides: list[str] = Field([], alias="set")  # KEY=VALUE, as `cosim run --set`, for every run
    schedulers: list[dict[str, Any]] | None = Field(None, min_length=1)  # [scheduler] tables; default: the scenario's
    grid: dict[str, list[Any]] = {}  # every combination of these fields' values
    zipped: dict[str, list[Any]] = Field({}, alias="zip")  # these fields' values taken together, position by position
    resources: Resources = Resources()

    @field_validator("grid", "zipped")
    @classmethod
    def _fields(cls, values: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for field, options in values.items():
            if field in ("seed", "scheduler.name"):
                raise ValueError(f"'{field}' is varied by the study's `seeds` / `schedulers`, not here")
            if not options:
                raise ValueError(f"'{field}' has no values; give at least one")
        return values

    @field_validator("schedulers")
    @classmethod
    def _named(cls, tables: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for table in tables or []:
            if not isinstance(table.get("name"), str):
                raise ValueError("every scheduler table needs a name, e.g. { name = 'all-in' }")
        return tables

    @model_validator(mode="after")
    def _zip_lengths(self) -> StudyConfig:
        lengths = {len(options) for options in self.zipped.values()}
        if len(lengths) > 1:
            raise ValueError("zip: every field needs the same number of values")
        return self


@dataclass(frozen=True)
class Point:
    """One cell of the study: its parameters (scheduler, varied fields, seed) and the run that answers it."""

    parameters: dict[str, Any]
    scenario: Scenario
    key: str


@dataclass(frozen=True)
class Study:
    config: StudyConfig
    points: list[Point]
    parameters: list[str]  # catalogue columns that describe a point, in order


def load_study(path: str | Path) -> Study:
    """Read and validate a study file and every scenario it expands to, before anything runs."""
    path = Path(path)
    try:
        config = StudyConfig.model_validate(tomllib.loads(path.read_text()))
    except FileNotFoundError:
        raise ScenarioError(str(path), ["file not found; pass the path of a study .toml"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"not valid TOML ({exc})"]) from None
    except ValidationError as exc:
        raise ScenarioError(str(path), [f"{'.'.join(map(str, e['loc'])) or 'study'}: "
                                        f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]) from None
    return expand_study(config, path.parent, str(path))


def expand_study(config: StudyConfig, base_dir: Path, source: str = "study") -> Study:
    """Every point of a study whose scenario path is relative to `base_dir`, each scenario validated."""
    base = load_scenario(Path(base_dir) / config.scenario, config.overrides)
    raw = base.model_dump(mode="json", exclude_unset=True)  # what the files set: it validates again
    schedulers = config.schedulers or [base.scheduler.model_dump(mode="json")]
    seeds = config.seeds or [base.seed]
    varied = [*config.grid, *config.zipped]
    rows = list(zip(*config.zipped.values(), strict=True)) or [()]
    code = _code_version()
    points = []
    for combo in itertools.product(*config.grid.values()):
        for row in rows:
            values = dict(zip(varied, (*combo, *row), strict=True))
            for table in schedulers:
                for seed in seeds:
                    scenario = _point_scenario(raw, table, values, seed, f"{source} ({table['name']}, seed {seed})")
                    points.append(Point({"scheduler": table["name"], **values, "seed": seed}, scenario,
                                        run_key(scenario, code)))
    return Study(config, points, ["scheduler", *varied, "seed"])


def _point_scenario(raw: dict[str, Any], scheduler: dict[str, Any], values: dict[str, Any], seed: int,
                    source: str) -> Scenario:
    """The base scenario with this point's scheduler, varied values and seed. A varied `scheduler.X` that the
    point's scheduler has no field for is left out (All-in ignores τ̄): such points share one run."""
    raw = copy.deepcopy(raw)
    raw["scheduler"], raw["seed"] = dict(scheduler), seed
    try:
        load_user_scheduler(scheduler["name"])
    except ValueError as exc:
        raise ScenarioError(source, [f"scheduler.name: {exc}"]) from None
    accepts = scheduler_config_class(scheduler["name"])
    for field, value in values.items():
        head, _, leaf = field.partition(".")
        if head == "scheduler" and accepts is not None and leaf not in accepts.model_fields:
            continue
        *parents, last = field.split(".")
        table = raw
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
    return parse_scenario(raw, source)


def _code_version() -> str:
    """A digest of the package's version and of every source file of the simulator."""
    digest = hashlib.sha256(metadata.version("iov-cosim").encode())
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__file__ or "").parent
        for source in sorted(root.rglob("*.py")):
            digest.update(source.relative_to(root).as_posix().encode() + source.read_bytes())
    return digest.hexdigest()


def run_key(scenario: Scenario, code: str) -> str:
    """What identifies a run: its scenario content and the code that runs it (a user's scheduler's source too)."""
    user = scheduler_source(scenario.scheduler.name)
    content = {"scenario": scenario.model_dump(mode="json"), "code": code,
               "scheduler_source": Path(user).read_text() if user else None}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def is_complete(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def execute_run(scenario: dict[str, Any], run_dir: str, cwd: str, sys_path: list[str], env: dict[str, str],
                threads: int) -> str | None:
    """One run in a worker (a pool process or a Ray task): a fresh run directory, the driver's working directory,
    import path and cache, and a fixed thread count so that results do not depend on where it ran. Returns the
    error, in one line, or None."""
    os.chdir(cwd)
    os.environ.update(env)
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    import torch
    from transformers.utils import logging as transformers_logging

    from cosim.engine import run_scenario

    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()  # the driver reports each run as it finishes
    shutil.rmtree(run_dir, ignore_errors=True)  # whatever an interrupted attempt left
    try:
        run_scenario(parse_scenario(scenario, run_dir), Path(run_dir))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return None


@dataclass
class Outcome:
    run: int = 0  # executed now
    skipped: int = 0  # complete before
    failed: int = 0


def run_study(study: Study, out_dir: Path, *, ray: str | None = None, workers: int | None = None,
              on_finish: Callable[[Point, str | None], None] = lambda point, error: None) -> Outcome:
    """Run every point not complete yet, `workers` at a time (default: all CPUs); the catalogue is rewritten after
    each. `ray`: None for a local process pool, "auto" to start a local Ray, else the address of a Ray cluster."""
    out_dir = Path(out_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    runs = {point.key: point for point in study.points}  # points with one scenario share a run
    finished: dict[str, pd.DataFrame | str] = {key: read_run(out_dir / "runs" / key)["rounds"] for key in runs
                                               if is_complete(out_dir / "runs" / key)}
    outcome = Outcome(skipped=len(finished))
    atomic_write_bytes(out_dir / STUDY, json.dumps({"name": study.config.name, "parameters": study.parameters,
                                                    "schedulers": list(dict.fromkeys(
                                                        p.parameters["scheduler"] for p in study.points))},
                                                   indent=2).encode())
    write_catalogue(study, out_dir, finished)
    pending = [key for key in runs if key not in finished]
    settings = {"cwd": os.getcwd(), "sys_path": list(sys.path), "threads": max(1, int(study.config.resources.cpus)),
                "env": {name: os.environ[name] for name in ("COSIM_CACHE", "PYTHONPATH") if name in os.environ}}
    jobs = [(key, runs[key].scenario.model_dump(mode="json", exclude_unset=True),
             str((out_dir / "runs" / key).resolve())) for key in pending]
    results = _ray_jobs(jobs, settings, ray, workers, study.config.resources) if ray else _pool_jobs(
        jobs, settings, workers)
    for key, error in results:
        finished[key] = error if error is not None else read_run(out_dir / "runs" / key)["rounds"]
        outcome.run += 1
        outcome.failed += error is not None
        write_catalogue(study, out_dir, finished)
        on_finish(runs[key], error)
    return outcome


Job = tuple[str, dict[str, Any], str]


class RayError(RuntimeError):
    """Ray could not be started or joined."""


def _pool_jobs(jobs: list[Job], settings: dict[str, Any], workers: int | None) -> Iterator[tuple[str, str | None]]:
    """Spawned worker processes (torch and SUMO's in-process library are not fork-safe), each running runs one
    after another as the test suite does."""
    if not jobs:
        return
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(execute_run, scenario, run_dir, **settings): key for key, scenario, run_dir in jobs}
        for future in as_completed(futures):
            try:
                error = future.result()
            except Exception as exc:  # the worker died (killed, out of memory)
                error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            yield futures[future], error


def _ray_jobs(jobs: list[Job], settings: dict[str, Any], address: str, workers: int | None,
              resources: Resources) -> Iterator[tuple[str, str | None]]:
    """Each run a Ray task with the study's CPU and GPU request."""
    import logging

    import ray

    started = not ray.is_initialized()
    if started:
        local = address == "auto"
        try:
            ray.init(address="local" if local else address, num_cpus=(workers or os.cpu_count()) if local else None,
                     include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(f"--ray {address}: cannot {'start' if local else 'join'} Ray ({exc}); check the address "
                           "(host:port of the head node) or use --ray auto") from None
    try:
        task = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus)(execute_run)
        refs = {task.remote(scenario, run_dir, **settings): key for key, scenario, run_dir in jobs}
        while refs:
            (done,), _ = ray.wait(list(refs), num_returns=1)
            try:
                error = ray.get(done)
            except Exception as exc:  # the task's worker died
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            yield refs.pop(done), error
    finally:
        if started:
            ray.shutdown()


def write_catalogue(study: Study, out_dir: Path, finished: dict[str, pd.DataFrame | str]) -> pd.DataFrame:
    """One row per finished point and round: the point's parameters, its run, status and error, and the run's
    `rounds` table (a failed run: one row, its error, no rounds)."""
    frames = []
    for point in study.points:
        if point.key not in finished:
            continue
        rounds = finished[point.key]
        error = rounds if isinstance(rounds, str) else None
        if error is not None:
            rounds = pd.DataFrame(math.nan, index=[0], columns=list(SCHEMA["rounds"]))
        frame = rounds.assign(**{name: [point.parameters[name]] * len(rounds) for name in study.parameters},
                              run=point.key, status="failed" if error else "complete", error=error or "")
        frames.append(frame[[*study.parameters, "run", "status", "error", *rounds.columns]])
    catalogue = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*study.parameters, "run", "status", "error"])
    atomic_write_bytes(out_dir / CATALOGUE, catalogue.to_parquet(index=False))
    return catalogue


def read_catalogue(study_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A study's catalogue and its description (name, parameter columns, schedulers in the study's order)."""
    study_dir = Path(study_dir)
    return pd.read_parquet(study_dir / CATALOGUE), json.loads((study_dir / STUDY).read_text())
