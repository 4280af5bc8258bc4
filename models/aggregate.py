"""Server-side aggregation of the client updates that arrived before the deadline."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from models.lora import check_state, resize_state, state_rank
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


def hetlora(updates: Sequence[ClientUpdate], rank: int) -> dict[str, torch.Tensor]:
    """HetLoRA aggregation (Cho et al., 2024): every client's A (r_k, in) and B (out, r_k) zero-padded to the
    global `rank`, then the sample-weighted average. Components beyond a client's rank count as zeros, so the
    high-rank components are learnt by the clients that have them and damped by those that do not."""
    above = [update.client for update in updates if state_rank(update.state) > rank]
    if above:
        raise ValueError(f"clients {above} hold adapters above rank {rank}; aggregate at the largest client rank")
    return fedavg([dataclasses.replace(update, state=resize_state(update.state, rank)) for update in updates])
