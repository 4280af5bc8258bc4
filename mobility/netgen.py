"""Build SUMO networks and traffic demand with SUMO's own tools, cached by content hash.

Building is the slow, side-effecting part of a scenario, so each distinct parameter set is built once into
`cache_dir/<hash>/` and reused; the hash also covers the SUMO version and this module's recipe version so an upgrade
never serves stale files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mobility.errors import MobilityError

# Bump when the commands below change, so old cache entries are not reused for a different recipe.
_RECIPE_VERSION = 1
_NET_NAME = "grid.net.xml"
_ROUTES_NAME = "routes.rou.xml"
_MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class SumoFiles:
    """The two inputs SUMO needs to run a scenario."""

    net: Path
    routes: Path


def sumo_home() -> Path:
    """SUMO_HOME of the eclipse-sumo wheel, where bin/ and tools/ live."""
    try:
        import sumo
    except ImportError as exc:
        raise MobilityError("the 'eclipse-sumo' package is not installed; install the project dependencies") from exc
    return Path(sumo.SUMO_HOME)


def sumo_version() -> str:
    """Version of the installed SUMO wheel; part of every cache key."""
    try:
        return importlib.metadata.version("eclipse-sumo")
    except importlib.metadata.PackageNotFoundError as exc:
        raise MobilityError("the 'eclipse-sumo' package is not installed; install the project dependencies") from exc


def grid_scenario(
    cache_dir: Path,
    *,
    junctions: int,
    edge_length_m: float,
    lanes: int,
    trip_period_s: float,
    end_s: float,
    seed: int,
) -> SumoFiles:
    """A junctions x junctions grid with random trips routed by duarouter, built once per parameter set.

    The build happens in a temporary sibling directory renamed into place, so an interrupted build never leaves a
    half cache entry and concurrent builders of the same entry do not corrupt each other.
    """
    params = {
        "kind": "grid",
        "junctions": int(junctions),
        "edge_length_m": float(edge_length_m),
        "lanes": int(lanes),
        "trip_period_s": float(trip_period_s),
        "end_s": float(end_s),
        "seed": int(seed),
        "sumo_version": sumo_version(),
        "recipe_version": _RECIPE_VERSION,
    }
    _check_params(params)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    entry = cache_dir / key
    files = SumoFiles(net=entry / _NET_NAME, routes=entry / _ROUTES_NAME)
    if files.net.is_file() and files.routes.is_file():
        return files

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache entry should be readable like any other output
    try:
        _build_grid(tmp, params)
        (tmp / _MANIFEST_NAME).write_text(json.dumps(params, indent=2, sort_keys=True))
        try:
            tmp.rename(entry)
        except OSError:
            # Another process finished the same entry first; its files are identical, keep them.
            if not (files.net.is_file() and files.routes.is_file()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _check_params(params: dict) -> None:
    rules = {
        "junctions": (params["junctions"] >= 2, ">= 2 (a grid needs at least one edge)"),
        "edge_length_m": (params["edge_length_m"] > 0, "> 0"),
        "lanes": (params["lanes"] >= 1, ">= 1"),
        "trip_period_s": (params["trip_period_s"] > 0, "> 0"),
        "end_s": (params["end_s"] > 0, "> 0"),
        "seed": (params["seed"] >= 0, ">= 0"),
    }
    problems = [f"{name}={params[name]} must be {rule}" for name, (ok, rule) in rules.items() if not ok]
    if problems:
        raise MobilityError("grid_scenario: " + "; ".join(problems))


def _build_grid(out: Path, params: dict) -> None:
    """Paths are relative to `out` (the tools run there) so the files do not embed the temporary directory."""
    home = sumo_home()
    _run_tool(
        out,
        [
            str(home / "bin" / "netgenerate"),
            "--grid",
            f"--grid.number={params['junctions']}",
            f"--grid.length={params['edge_length_m']}",
            f"--default.lanenumber={params['lanes']}",
            f"--seed={params['seed']}",
            "--no-warnings",
            f"--output-file={_NET_NAME}",
        ],
    )
    _run_tool(
        out,
        [
            sys.executable,
            str(home / "tools" / "randomTrips.py"),
            f"--net-file={_NET_NAME}",
            "--output-trip-file=trips.trips.xml",
            f"--route-file={_ROUTES_NAME}",
            "--begin=0",
            f"--end={params['end_s']}",
            f"--period={params['trip_period_s']}",
            f"--seed={params['seed']}",
            "--validate",
        ],
    )
    for path in (out / _NET_NAME, out / _ROUTES_NAME):
        if not path.is_file() or path.stat().st_size == 0:
            raise MobilityError(f"SUMO tools finished but did not write {path.name}; check the SUMO installation")


def _run_tool(cwd: Path, cmd: list[str]) -> None:
    """Run one SUMO tool; on failure raise with the command and the tail of its output."""
    env = {**os.environ, "SUMO_HOME": str(sumo_home())}
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise MobilityError(f"cannot run {cmd[0]}: {exc}; check the eclipse-sumo installation") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise MobilityError(
            f"{Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name} failed "
            f"(exit {proc.returncode}): {' '.join(cmd)}\n{tail}"
        )
