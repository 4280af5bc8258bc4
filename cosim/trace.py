"""Run directory: tidy tables with SI units in the column names, streamed to disk as the run goes, and its manifest.

While a run goes, each table is an Arrow IPC stream (`rounds.arrows`, ...) to which every flush appends one record
batch of the rows added since the last one: the cost of a round is that round's rows, whatever its index, and memory
holds one round at most. A stream is a schema message followed by batch messages, so truncating it at a recorded
length (a checkpoint's) leaves a valid stream to append to, and a reader stops cleanly before a torn last batch.
When the run ends, each table is consolidated once into `<table>.parquet` (written atomically); `read_run` reads the
parquet tables when they exist and the streams otherwise (a run still going, or killed)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.rundir import reported_status

SCHEMA: dict[str, dict[str, str]] = {
    "rounds": {
        "round": "int64", "start_s": "float64", "end_s": "float64", "duration_s": "float64",
        "candidates": "int64", "participants": "int64", "arrivals": "int64", "drops": "int64",
        "upload_bytes": "int64", "download_bytes": "int64", "energy_j": "float64",
        "train_loss": "float64", "accuracy": "float64", "loss": "float64",
    },
    "participants": {
        "round": "int64", "vehicle": "string", "client": "int64", "task": "string", "rsu": "int64",
        "distance_m": "float64",
        "gain_db": "float64", "rate_bps": "float64", "bandwidth_hz": "float64", "rank": "int64", "density": "float64",
        "download_bits": "int64", "download_start_s": "float64", "download_end_s": "float64", "download_s": "float64",
        "compute_start_s": "float64", "compute_end_s": "float64", "compute_time_s": "float64",
        "upload_bits": "int64", "upload_start_s": "float64", "upload_end_s": "float64", "upload_delay_s": "float64",
        "compute_energy_j": "float64", "transmit_energy_j": "float64", "idle_energy_j": "float64",
        "energy_j": "float64", "battery_j": "float64", "scheduled_air_time_s": "float64", "outcome": "string",
        "train_loss": "float64",
    },
    "tasks": {
        "round": "int64", "task": "string", "participants": "int64", "arrivals": "int64", "energy_j": "float64",
        "train_loss": "float64", "accuracy": "float64", "loss": "float64", "budget_share": "float64",
        "budget_j": "float64", "client_budget_j": "float64",
    },
    "handovers": {"time_s": "float64", "vehicle": "string", "from_rsu": "int64", "to_rsu": "int64",
                  "kind": "string", "interruption_s": "float64"},
    "aggregations": {"round": "int64", "level": "string", "rsu": "int64", "contributors": "int64", "samples": "int64",
                     "bits": "int64", "backhaul_s": "float64", "start_s": "float64", "end_s": "float64"},
    "components": {"round": "int64", "vehicle": "string", "component": "int64", "a_norm": "float64",
                   "b_norm": "float64"},
    "vehicles": {"time_s": "float64", "vehicle": "string", "x_m": "float64", "y_m": "float64",
                 "speed_mps": "float64", "rsu": "int64", "battery_j": "float64"},
}
STREAM_SUFFIX = ".arrows"
ROW_GROUP_ROWS = 1 << 20  # parquet row group of a consolidated table
MANIFEST = "manifest.json"

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


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    """Write beside the target, then rename: a reader never sees a half-written file. `durable` also syncs the data
    to disk before the rename, so that a crash of the machine cannot leave the new name on missing data."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)


def frame(name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of table `name` as a DataFrame with the table's columns and dtypes."""
    columns = SCHEMA[name]
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


ARROW_SCHEMA = {name: pa.Schema.from_pandas(frame(name, []), preserve_index=False) for name in SCHEMA}
_HEADER = {name: ARROW_SCHEMA[name].serialize().to_pybytes() for name in SCHEMA}


class TraceWriter:
    """Buffers the rows added since the last flush; `flush` appends them to each table's stream and rewrites the
    manifest atomically. `lengths` (bytes per stream, from a checkpoint) continues existing streams cut back to those
    lengths instead of starting new ones."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any], lengths: dict[str, int] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.rows: dict[str, list[dict[str, Any]]] = {table: [] for table in SCHEMA}
        self._streams: dict[str, BinaryIO] = {}
        for name in SCHEMA:
            (self.out_dir / f"{name}.parquet").unlink(missing_ok=True)  # stale once the streams move on
            path = self.stream_path(name)
            if lengths is None:
                path.write_bytes(_HEADER[name])
            elif not path.is_file() or path.stat().st_size < lengths[name] or lengths[name] < len(_HEADER[name]):
                raise ValueError(f"{path} is shorter than its checkpoint says ({lengths[name]} bytes); the run "
                                 "directory was altered, start it again with --overwrite")
            self._streams[name] = open(path, "r+b")  # noqa: SIM115 - open for the writer's lifetime, closed by close()
            self._streams[name].truncate(len(_HEADER[name]) if lengths is None else lengths[name])
            self._streams[name].seek(0, os.SEEK_END)

    def stream_path(self, name: str) -> Path:
        return self.out_dir / f"{name}{STREAM_SUFFIX}"

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.rows[table].extend(rows)

    def lengths(self) -> dict[str, int]:
        """Bytes written so far to each stream (what a checkpoint records)."""
        return {name: stream.tell() for name, stream in self._streams.items()}

    def discard(self) -> dict[str, list[dict[str, Any]]]:
        """Take the buffered rows away unwritten (a resumed run's re-simulated rounds, already on disk)."""
        rows, self.rows = self.rows, {table: [] for table in SCHEMA}
        return rows

    def flush(self, durable: bool = False, **manifest_updates: Any) -> None:
        """Append the buffered rows (one record batch per table that has any) and rewrite the manifest. `durable`
        syncs the streams to disk first, as a checkpoint that records their lengths needs."""
        for name, rows in self.rows.items():
            if rows:
                batch = pa.RecordBatch.from_pylist(rows, schema=ARROW_SCHEMA[name])
                self._streams[name].write(batch.serialize().to_pybytes())
            self._streams[name].flush()
            if durable:
                os.fsync(self._streams[name].fileno())
            rows.clear()
        self.write_manifest(**manifest_updates)

    def write_manifest(self, **updates: Any) -> None:
        self.manifest.update(updates)
        text = json.dumps(self.manifest, indent=2, sort_keys=True, default=str)
        atomic_write_bytes(self.out_dir / MANIFEST, text.encode())

    def consolidate(self, keep_streams: bool) -> None:
        """Write every table once as `<table>.parquet`, atomically, in row groups of exactly ROW_GROUP_ROWS rows (the
        last one shorter), so that the bytes depend only on the rows, not on how rounds cut them into batches, and
        memory holds one row group; the streams are removed unless `keep_streams` (a run that may be resumed)."""
        self.close()
        for name in SCHEMA:
            target = self.out_dir / f"{name}.parquet"
            tmp = target.with_name(f".{target.name}.tmp")
            with pq.ParquetWriter(tmp, ARROW_SCHEMA[name]) as writer:
                pending: list[pa.RecordBatch] = []
                for batch in stream_batches(self.stream_path(name)):
                    pending.append(batch)
                    while sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                        rows = pa.Table.from_batches(pending).combine_chunks()
                        writer.write_table(rows.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                        pending = rows.slice(ROW_GROUP_ROWS).to_batches()
                writer.write_table(pa.Table.from_batches(pending, ARROW_SCHEMA[name]).combine_chunks(),
                                   row_group_size=ROW_GROUP_ROWS)
            os.replace(tmp, target)
            if not keep_streams:
                self.stream_path(name).unlink()

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()

    def table(self, name: str) -> pd.DataFrame:
        """Everything flushed so far to table `name`."""
        return read_table(self.out_dir, name)


def stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """A table's stream, batch by batch, up to its last whole batch (a batch torn by a crash ends it)."""
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
        while True:
            yield reader.read_next_batch()
    except StopIteration:
        return
    except (OSError, pa.ArrowInvalid):
        return  # torn at the end (or in the schema header of a stream just created): the whole batches before it


def read_stream(path: Path, name: str) -> pa.Table:
    """A table's stream up to its last whole batch; empty if there is none."""
    return pa.Table.from_batches(list(stream_batches(path)), schema=ARROW_SCHEMA[name])


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """One table of a run directory: its parquet file once the run has ended, else its stream."""
    run_dir = Path(run_dir)
    parquet = run_dir / f"{name}.parquet"
    if parquet.is_file():
        return pd.read_parquet(parquet)
    stream = run_dir / f"{name}{STREAM_SUFFIX}"
    if not stream.is_file():
        raise FileNotFoundError(f"{run_dir} has neither {parquet.name} nor {stream.name}; is it a run directory?")
    return read_stream(stream, name).to_pandas()


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest, with status "killed" for a run whose manifest says "running" but whose process is gone."""
    manifest = json.loads((Path(run_dir) / MANIFEST).read_text())
    manifest["status"] = reported_status(manifest)
    return manifest


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Load a run directory, finished or not: every table as a DataFrame, plus the manifest under 'manifest'."""
    run: dict[str, Any] = {name: read_table(run_dir, name) for name in SCHEMA}
    run["manifest"] = read_manifest(run_dir)
    return run
