"""Run directory writer: tidy parquet tables with SI units in the column names, replaced atomically."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA: dict[str, dict[str, str]] = {
    "rounds": {
        "round": "int64", "start_s": "float64", "end_s": "float64", "duration_s": "float64",
        "candidates": "int64", "participants": "int64", "arrivals": "int64", "drops": "int64",
        "upload_bytes": "int64", "download_bytes": "int64", "energy_j": "float64",
        "train_loss": "float64", "accuracy": "float64", "loss": "float64",
    },
    "participants": {
        "round": "int64", "vehicle": "string", "client": "int64", "rsu": "int64", "distance_m": "float64",
        "gain_db": "float64", "rate_bps": "float64", "bandwidth_hz": "float64", "rank": "int64", "density": "float64",
        "download_bits": "int64", "download_start_s": "float64", "download_end_s": "float64", "download_s": "float64",
        "compute_start_s": "float64", "compute_end_s": "float64", "compute_time_s": "float64",
        "upload_bits": "int64", "upload_start_s": "float64", "upload_end_s": "float64", "upload_delay_s": "float64",
        "compute_energy_j": "float64", "transmit_energy_j": "float64", "idle_energy_j": "float64",
        "energy_j": "float64", "battery_j": "float64", "scheduled_air_time_s": "float64", "outcome": "string",
        "train_loss": "float64",
    },
    "handovers": {"time_s": "float64", "vehicle": "string", "from_rsu": "int64", "to_rsu": "int64",
                  "kind": "string", "interruption_s": "float64"},
    "vehicles": {"time_s": "float64", "vehicle": "string", "x_m": "float64", "y_m": "float64",
                 "speed_mps": "float64", "rsu": "int64", "battery_j": "float64"},
}

PACKAGES = ("iov-cosim", "numpy", "scipy", "pandas", "pyarrow", "simpy", "pydantic", "torch", "transformers",
            "peft", "eclipse-sumo", "libsumo")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TraceWriter:
    """Collects rows per table; `flush` rewrites every table and the manifest, each file atomically."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.rows: dict[str, list[dict[str, Any]]] = {table: [] for table in SCHEMA}

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.rows[table].extend(rows)

    def table(self, name: str) -> pd.DataFrame:
        columns = SCHEMA[name]
        return pd.DataFrame(self.rows[name], columns=list(columns)).astype(columns)

    def flush(self, **manifest_updates: Any) -> None:
        self.manifest.update(manifest_updates)
        for name in SCHEMA:
            atomic_write_bytes(self.out_dir / f"{name}.parquet", self.table(name).to_parquet(index=False))
        text = json.dumps(self.manifest, indent=2, sort_keys=True, default=str)
        atomic_write_bytes(self.out_dir / "manifest.json", text.encode())


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Load a run directory: every table as a DataFrame, plus the manifest under 'manifest'."""
    run_dir = Path(run_dir)
    run: dict[str, Any] = {name: pd.read_parquet(run_dir / f"{name}.parquet") for name in SCHEMA}
    run["manifest"] = json.loads((run_dir / "manifest.json").read_text())
    return run
