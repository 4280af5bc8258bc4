"""Run directories: default names that differ when the scenario does, no silent overwrite, and an honest status
for a run whose process is gone."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosim.scenario import Scenario

STATUSES = ("running", "complete", "interrupted", "failed", "killed")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to pass instead."""


def scenario_hash(scenario: Scenario) -> str:
    """8 hex digits of the scenario after overrides: runs that differ in any field get different default names."""
    return hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()[:8]


def safe_name(name: str) -> str:
    """`name` as one path component: separators, NUL and other odd characters become '-', no leading dot."""
    return _UNSAFE.sub("-", name).strip("-.")[:80] or "run"


def default_run_dir(scenario: Scenario, root: Path = Path("runs")) -> Path:
    return root / f"{safe_name(scenario.name)}-seed{scenario.seed}-{scenario_hash(scenario)}"


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def prepare_new(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty directory unless `overwrite`, which replaces a previous run (never a directory
    that is not one)."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not is_run_dir(out_dir):
        raise RunDirError(f"{out_dir} exists and is not a run directory; choose another --out")
    if not overwrite:
        raise RunDirError(f"{out_dir} already holds a run; pass --resume {out_dir} to continue it or --overwrite "
                          "to replace it")
    shutil.rmtree(out_dir)


def process_identity() -> dict[str, Any]:
    """Who writes the run: enough for a later command to tell whether that process still exists."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(), "pid_start": _start_ticks(os.getpid())}


def reported_status(manifest: dict[str, Any]) -> str:
    """The manifest's status, except "killed" for a "running" run whose process on this host is gone (or is another
    process that reused its pid). A run on another host is taken at its word."""
    status = manifest.get("status", "running")
    if status != "running" or manifest.get("hostname") != socket.gethostname() or "pid" not in manifest:
        return status
    start = _start_ticks(int(manifest["pid"]))
    alive = start is not None and manifest.get("pid_start") in (None, start)
    return "running" if alive else "killed"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), None if it does not exist or is a zombie;
    without /proc a signal-0 probe, 0 for a process that exists."""
    if Path("/proc/self/stat").is_file():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return None if fields[0] in ("Z", "X") else int(fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0
