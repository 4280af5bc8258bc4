"""SUMO's own configuration: a shipped `.sumocfg` read into the files and times the project needs, and the extra
command-line options a scenario may pass, checked against SUMO's option catalogue and against the options the
project sets itself."""

from __future__ import annotations

import difflib
import functools
import re
import subprocess
import tempfile
import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path

from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, parse_xml, sumo_home

# Options the project sets from scenario fields (the field to use instead), or needs for itself.
CONTROLLED_OPTIONS = {
    "configuration-file": "mobility.sumo_config", "net-file": "mobility.network", "route-files": "mobility.demand",
    "additional-files": "mobility.additional", "step-length": "mobility.step_length_s", "seed": "seed",
    "random": "seed", "scale": "mobility.scale", "time-to-teleport": "mobility.time_to_teleport_s",
    "begin": "mobility.begin_s", "end": "simulation.rounds", "load-state": "mobility.warm_start",
    "save-state.times": "mobility.warm_start", "error-log": "nothing (the project reads it)",
    "remote-port": "mobility.remote", "start": "mobility.gui", "quit-on-end": "mobility.gui",
}
_TIME_OPTIONS = ("begin", "end", "step-length")


@dataclass(frozen=True)
class SumoConfigFile:
    """What a `.sumocfg` names: its files (absolute) and its begin, end and step length (None where unset)."""

    path: Path
    files: SumoFiles
    begin_s: float | None
    end_s: float | None
    step_length_s: float | None


def read_sumo_config(path: Path) -> SumoConfigFile:
    """Read a `.sumocfg`; relative file names resolve against its directory, as SUMO does."""
    path = Path(path).resolve()
    values: dict[str, str] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        if "value" in attrs:
            values[tag] = attrs["value"]

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parse_xml(path, parser, "SUMO config")

    def files(option: str) -> tuple[Path, ...]:
        names = [name for name in re.split(r"[,\s]+", values.get(option, "")) if name]
        found = tuple((path.parent / name).resolve() for name in names)
        for file in found:
            if not file.is_file():
                raise MobilityError(f"SUMO config {path}: {option} {file} does not exist; fix the config")
        return found

    nets = files("net-file")
    if len(nets) != 1:
        raise MobilityError(f"SUMO config {path}: needs exactly one <net-file value=...>, found {len(nets)}")
    times: dict[str, float | None] = {}
    for option in _TIME_OPTIONS:
        text = values.get(option)
        try:
            times[option] = None if text is None else float(text)
        except ValueError:
            raise MobilityError(f"SUMO config {path}: <{option} value={text!r}> must be seconds") from None
    return SumoConfigFile(path, SumoFiles(net=nets[0], routes=files("route-files"),
                                          additional=files("additional-files")),
                          times["begin"], times["end"], times["step-length"])


@functools.cache
def sumo_option_names() -> dict[str, str]:
    """Every SUMO option and synonym, mapped to its full name, from SUMO's own configuration template."""
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.xml"
        try:
            subprocess.run([str(sumo_home() / "bin" / "sumo"), "--save-template", str(template)],
                           capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise MobilityError(f"cannot list SUMO's options ({exc}); check the eclipse-sumo installation") from exc
        names: dict[str, str] = {}

        def start(tag: str, attrs: dict[str, str]) -> None:
            if "type" in attrs:
                names[tag] = tag
                names.update(dict.fromkeys(attrs.get("synonymes", "").split(), tag))

        parser = xml.parsers.expat.ParserCreate()
        parser.StartElementHandler = start
        parse_xml(template, parser, "SUMO template")
    return names


def controlled_option_problems(options: list[str]) -> list[str]:
    """Static check of `mobility.sumo_options` (no SUMO needed): option syntax and options the project sets."""
    problems = []
    for option in options:
        if not option.startswith("-"):
            continue
        name = option.lstrip("-").split("=", 1)[0]
        if name in CONTROLLED_OPTIONS:
            problems.append(f"mobility.sumo_options: {option} is set by the project; use "
                            f"{CONTROLLED_OPTIONS[name]} instead")
    if options and not options[0].startswith("-"):
        problems.append(f"mobility.sumo_options: {options[0]!r} must be an option such as '--ignore-route-errors' "
                        "(values follow their option as separate items)")
    return problems


def option_problems(options: list[str]) -> list[str]:
    """`controlled_option_problems` plus options SUMO does not know (with the closest name), synonyms included."""
    problems = controlled_option_problems(options)
    if problems:
        return problems
    known = sumo_option_names()
    for option in options:
        if not option.startswith("-") or _is_number(option):
            continue
        name = option.lstrip("-").split("=", 1)[0]
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean --{close[0]}?" if close else "; see sumo --help"
            problems.append(f"mobility.sumo_options: SUMO has no option {option}{hint}")
        elif known[name] in CONTROLLED_OPTIONS:
            problems.append(f"mobility.sumo_options: {option} is set by the project; use "
                            f"{CONTROLLED_OPTIONS[known[name]]} instead")
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
