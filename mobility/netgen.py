"""Build SUMO networks and traffic demand with SUMO's own tools, cached by content hash.

Building is the slow, side-effecting part of a scenario, so each distinct build is done once into
`cache_dir/<hash>/` and reused. The hash covers the parameters, the content of every input file (a user's net or
OpenStreetMap extract), the SUMO version and this module's recipe version, so neither an edited input nor an upgrade
ever serves stale files.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mobility.errors import MobilityError

# Bump when the commands below change, so old cache entries are not reused for a different recipe.
_RECIPE_VERSION = 2
NET_NAME = "net.net.xml"
ROUTES_NAME = "routes.rou.xml"
_MANIFEST_NAME = "manifest.json"
# netgenerate's switch and the options each generated kind accepts (value: its netgenerate option name).
_GENERATORS: dict[str, tuple[str, dict[str, str]]] = {
    "grid": ("--grid", {"junctions": "--grid.number", "edge_length_m": "--grid.length"}),
    "spider": ("--spider", {"arms": "--spider.arm-number", "circles": "--spider.circle-number",
                            "space_m": "--spider.space-radius"}),
    "random": ("--rand", {"iterations": "--rand.iterations", "edge_length_m": "--rand.min-distance"}),
}


@dataclass(frozen=True)
class SumoFiles:
    """What SUMO needs to run a scenario: one network, route files (vehicle types first), optional additionals."""

    net: Path
    routes: tuple[Path, ...]
    additional: tuple[Path, ...] = field(default=())


def default_cache_dir() -> Path:
    """Where generated networks and demand live (content-addressed, safe to delete): $COSIM_CACHE or
    ~/.cache/cosim."""
    return Path(os.environ.get("COSIM_CACHE", Path.home() / ".cache" / "cosim"))


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


def generated_network(cache_dir: Path, kind: str, *, lanes: int, seed: int, **options: float) -> Path:
    """A netgenerate network: kind 'grid' (junctions, edge_length_m), 'spider' (arms, circles, space_m) or
    'random' (iterations, edge_length_m as the minimum edge length)."""
    if kind not in _GENERATORS:
        raise MobilityError(f"network kind {kind!r} is not one of {', '.join(_GENERATORS)}")
    switch, names = _GENERATORS[kind]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise MobilityError(f"{kind} network: unknown option(s) {', '.join(unknown)}; expected {', '.join(names)}")
    rules = {"junctions": 2, "arms": 3, "circles": 1, "iterations": 1}
    problems = [f"{name}={value} must be >= {rules[name]}" for name, value in options.items()
                if name in rules and value < rules[name]]
    problems += [f"{name}={value} must be > 0" for name, value in options.items()
                 if name not in rules and not value > 0]
    if lanes < 1:
        problems.append(f"lanes={lanes} must be >= 1")
    if problems:
        raise MobilityError(f"{kind} network: " + "; ".join(problems))
    params = {"kind": kind, "lanes": int(lanes), "seed": int(seed), **{k: float(v) for k, v in options.items()}}
    cmd = [str(sumo_home() / "bin" / "netgenerate"), switch, f"--default.lanenumber={lanes}", f"--seed={seed}",
           *(f"{names[name]}={value:g}" for name, value in sorted(options.items())),
           "--no-warnings", f"--output-file={NET_NAME}"]
    return cached(cache_dir, params, [], lambda out: _run_tool(out, cmd), NET_NAME)


def osm_network(cache_dir: Path, osm_file: Path) -> Path:
    """A SUMO network converted by netconvert from an OpenStreetMap extract (.osm or .osm.xml[.gz])."""
    osm_file = _existing(osm_file, "OpenStreetMap extract")
    cmd = [str(sumo_home() / "bin" / "netconvert"), f"--osm-files={osm_file}", "--geometry.remove",
           "--ramps.guess", "--junctions.join", "--tls.guess-signals", "--tls.discard-simple", "--no-warnings",
           f"--output-file={NET_NAME}"]
    return cached(cache_dir, {"kind": "osm"}, [osm_file], lambda out: _run_tool(out, cmd), NET_NAME)


def random_demand(cache_dir: Path, net: Path, *, trip_period_s: float, begin_s: float, end_s: float,
                  seed: int) -> Path:
    """Random trips between the network's edges (randomTrips), routed and validated by duarouter."""
    net = _existing(net, "net")
    problems = [f"{name}={value} must be > 0" for name, value in (("trip_period_s", trip_period_s),
                                                                   ("end_s", end_s)) if not value > 0]
    problems += [f"begin_s={begin_s} must be >= 0 and < end_s"] if not 0 <= begin_s < end_s else []
    problems += [f"seed={seed} must be >= 0"] if seed < 0 else []
    if problems:
        raise MobilityError("random demand: " + "; ".join(problems))
    params = {"kind": "random-trips", "trip_period_s": float(trip_period_s), "begin_s": float(begin_s),
              "end_s": float(end_s), "seed": int(seed)}
    cmd = [sys.executable, str(sumo_home() / "tools" / "randomTrips.py"), f"--net-file={net}",
           "--output-trip-file=trips.trips.xml", f"--route-file={ROUTES_NAME}", f"--begin={begin_s:g}",
           f"--end={end_s:g}", f"--period={trip_period_s:g}", f"--seed={seed}", "--validate"]
    return cached(cache_dir, params, [net], lambda out: _run_tool(out, cmd), ROUTES_NAME)


def grid_scenario(cache_dir: Path, *, junctions: int, edge_length_m: float, lanes: int, trip_period_s: float,
                  end_s: float, seed: int) -> SumoFiles:
    """A junctions x junctions grid with random routed trips: the quick synthetic scenario of tests and benchmarks."""
    net = generated_network(cache_dir, "grid", lanes=lanes, seed=seed, junctions=junctions,
                            edge_length_m=edge_length_m)
    routes = random_demand(cache_dir, net, trip_period_s=trip_period_s, begin_s=0.0, end_s=end_s, seed=seed)
    return SumoFiles(net=net, routes=(routes,))


def file_digest(path: Path) -> str:
    """sha256 of a file's content, streamed so a large extract does not sit in memory. XML comments in the first
    MiB are left out: SUMO's tools put a generation timestamp there, which would make every rebuild of the same
    network look like a new input."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(re.sub(rb"<!--.*?-->", b"", handle.read(1 << 20), flags=re.DOTALL))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_xml(path: Path, what: str) -> None:
    """Fail early, naming the file and line, on XML that SUMO would reject with a bare "Process Error" (libsumo
    reports its parse errors on stderr only)."""
    parse_xml(path, xml.parsers.expat.ParserCreate(), what)


def parse_xml(path: Path, parser: xml.parsers.expat.XMLParserType, what: str) -> None:
    """Run an expat parser over a (possibly gzipped) file; malformed or unreadable files raise a MobilityError
    naming the file, the line and the fix."""
    try:
        with (gzip.open if Path(path).name.lower().endswith(".gz") else open)(path, "rb") as handle:
            parser.ParseFile(handle)
    except xml.parsers.expat.ExpatError as exc:
        raise MobilityError(f"{what} file {path}, line {exc.lineno}: malformed XML "
                            f"({xml.parsers.expat.ErrorString(exc.code)}); is it truncated? regenerate or fix "
                            "the file") from None
    except (OSError, EOFError) as exc:
        raise MobilityError(f"{what} file {path} cannot be read ({exc}); fix the path or the file") from None


def _existing(path: Path, what: str) -> Path:
    path = Path(path).resolve()
    if not path.is_file():
        raise MobilityError(f"{what} file {path} does not exist; fix the path in the scenario")
    return path


def cached(cache_dir: Path, params: dict, inputs: list[Path], build: Callable[[Path], None], output: str) -> Path:
    """Return cache_dir/<key>/<output>, building it first if absent.

    The build happens in a temporary sibling directory renamed into place, so an interrupted build never leaves a
    half cache entry and concurrent builders of the same entry do not corrupt each other.
    """
    keyed = {**params, "inputs": [file_digest(p) for p in inputs], "sumo_version": sumo_version(),
             "recipe_version": _RECIPE_VERSION}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    target = cache_dir / key / output
    if target.is_file():
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{_host()}-{os.getpid()}.", suffix=".tmp", dir=cache_dir))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache entry should be readable like any other output
    try:
        build(tmp)
        if not (tmp / output).is_file() or (tmp / output).stat().st_size == 0:
            raise MobilityError(f"SUMO tools finished but did not write {output}; check the SUMO installation")
        (tmp / _MANIFEST_NAME).write_text(json.dumps({**keyed, "inputs": [str(p) for p in inputs],
                                                      "input_sha256": keyed["inputs"]}, indent=2, sort_keys=True))
        try:
            tmp.rename(target.parent)
        except OSError:
            # Another process finished the same entry first; its files are identical, keep them.
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_abandoned_builds(cache_dir: Path) -> None:
    """Delete the temporary directories of builds on this host whose process is gone (killed, so that no `finally`
    ran). Builds of other hosts sharing the cache are left alone; a live process that reused an id only delays it."""
    host = _host()
    for tmp in cache_dir.glob(".*.tmp"):
        builder = re.fullmatch(r"\.[0-9a-f]+\.(.+)-(\d+)\.[^.]+\.tmp", tmp.name)
        if builder and builder[1] == host and not _alive(int(builder[2])):
            shutil.rmtree(tmp, ignore_errors=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def _run_tool(cwd: Path, cmd: list[str]) -> None:
    """Run one SUMO tool in `cwd` (outputs are relative names, so files do not embed the temporary directory); on
    failure raise with the command and the tail of its output."""
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
