"""Server-side aggregation of the client updates that arrived before the deadline."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.lora import check_state
from models.trainer import ClientUpdate


def fedavg(updates: Sequence[ClientUpdate]) -> dict[str, torch.Tensor]:
    """Sample-weighted average of the client states (McMahan et al., 2017), accumulated in float64 so the result
    does not depend on float32 rounding order more than necessary; returned as float32 with sorted keys."""
    if not updates:
        raise ValueError("fedavg needs at least one update; skip aggregation when no client's upload arrived")
    if any(update.num_samples < 1 for update in updates):
        raise ValueError("every update's num_samples must be >= 1 (it is the FedAvg weight)")
    reference = updates[0].state
    for update in updates[1:]:
        check_state(reference, update.state)
    total = sum(update.num_samples for update in updates)
    return {
        name: sum(
            (update.state[name].double() * (update.num_samples / total) for update in updates),
            start=torch.zeros(reference[name].shape, dtype=torch.float64),
        ).float()
        for name in sorted(reference)
    }
