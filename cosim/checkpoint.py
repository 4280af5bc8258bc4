"""Checkpoints of a run at a round boundary: what a resumed run cannot re-simulate cheaply.

A resumed run re-simulates its mobility, channel, association, scheduler and transfers from the start (all
deterministic from the seed, and cheap next to training), so none of their state needs saving; the learning state
(adapters, heads, optimiser state) and torch's global RNG are saved here, with the byte length of every trace stream
at that boundary. A checkpoint file is a SHA-256 digest followed by the payload, written beside its final name and
renamed after an fsync; the two newest are kept, and a file whose digest does not match (torn by a crash of the
machine, truncated, edited) is skipped for the one before it."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cosim.trace import atomic_write_bytes

DIRECTORY = "checkpoints"
KEEP = 2
_DIGEST = hashlib.sha256().digest_size


@dataclass(frozen=True)
class Checkpoint:
    """The state after `next_round` rounds (0 .. next_round - 1 done)."""

    next_round: int
    lengths: dict[str, int]  # bytes of each table's stream
    learning: dict[str, Any]  # the task's state_dict()
    torch_rng: dict[str, Any]


def rng_state() -> dict[str, Any]:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` durably and atomically, then drop all but the KEEP newest."""
    folder = Path(run_dir) / DIRECTORY
    folder.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"next_round": checkpoint.next_round, "lengths": checkpoint.lengths, "learning": checkpoint.learning,
                "torch_rng": checkpoint.torch_rng}, buffer)
    payload = buffer.getvalue()
    path = folder / f"round-{checkpoint.next_round:06d}.ckpt"
    atomic_write_bytes(path, hashlib.sha256(payload).digest() + payload, durable=True)
    for old in _newest_first(folder)[KEEP:]:
        old.unlink()
    return path


def load_latest(run_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest intact checkpoint (None if there is none) and a note for each damaged one skipped on the way."""
    skipped = []
    for path in _newest_first(Path(run_dir) / DIRECTORY):
        data = path.read_bytes()
        digest, payload = data[:_DIGEST], data[_DIGEST:]
        if len(data) <= _DIGEST or hashlib.sha256(payload).digest() != digest:
            skipped.append(f"{path.name} is damaged (checksum mismatch); using the one before")
            continue
        state = torch.load(io.BytesIO(payload), weights_only=True)
        return Checkpoint(state["next_round"], state["lengths"], state["learning"], state["torch_rng"]), skipped
    return None, skipped


def _newest_first(folder: Path) -> list[Path]:
    return sorted(folder.glob("round-*.ckpt"), reverse=True) if folder.is_dir() else []
