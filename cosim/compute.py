"""What one participant computes in a round as a function of its LoRA rank: the one formula the planner and the
participant process share, so a rank's compute time and energy are planned as they are spent.

Per token of a local training sample, in FLOPs (one multiply-add = 2 FLOPs):
- the frozen base: forward 2·Σ in·out over its linear layers, backward 2·Σ in·out more (gradients flow through it
  to the adapters below, but its weights get none): 4·Σ in·out;
- each adapter of rank r on a linear layer (in, out): forward x·Aᵀ·Bᵀ is 2·r·(in + out), backward the gradients of
  A, B and of the input, twice that again: 6·r·(in + out).
Attention score products, normalisation and the head are left out (a few per cent at 64 tokens, and rank-free).

The device profile's `cycles_per_sample` is the cost of one sample at the task's default rank; another rank costs
that times the ratio of FLOPs, so scenarios that never choose a rank run exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosim.payload import IntArrayLike


@dataclass(frozen=True)
class ComputeModel:
    """FLOPs per token of local training as an affine function of the LoRA rank (see the module doc)."""

    base_flop_per_token: float  # 4·Σ in·out over the frozen linear layers
    flop_per_token_per_rank: float  # 6·Σ (in + out) over the adapted layers
    default_rank: int

    @classmethod
    def from_layers(cls, frozen_macs: int, adapter_widths: int, default_rank: int) -> ComputeModel:
        """From Σ in·out of the frozen linear layers and Σ (in + out) of the adapted ones (RankProfile's
        per_rank_values)."""
        return cls(4.0 * frozen_macs, 6.0 * adapter_widths, default_rank)

    def flop_per_token(self, rank: IntArrayLike = None) -> np.ndarray:
        ranks = np.asarray(self.default_rank if rank is None else rank, dtype=float)
        return self.base_flop_per_token + self.flop_per_token_per_rank * ranks

    def scale(self, rank: IntArrayLike = None) -> np.ndarray:
        """Compute at `rank` relative to the default rank: what multiplies the device profile's time and energy."""
        return self.flop_per_token(rank) / self.flop_per_token(None)
