"""What one participant puts on the air in a round, as a function of the plan's decision for it (LoRA rank r, kept
density ρ): the one place where bits are counted, used by schedulers to plan and by the round process to transfer.

Bits are values × bits per value (the wire precision), payload only (no protocol overhead). A transfer's size is
affine in the rank: fixed values (a head, embeddings, features) plus values per rank component (one row of every
LoRA A and one column of every LoRA B; or one r-vector per token and adapted module of split gradient information).
An upload at density ρ < 1 keeps round(ρ·r) rank components per adapted module (at least one) and says which with a
bitmap of r bits per module; the rank-independent part is always sent whole.

What a plan covers (the contract between scheduler and radio): every transfer that runs at the vehicle's own uplink
rate R_k(B_k) on its scheduled FDMA share: its uploads, and its downloads when the RSU answers at that same rate
(`rsu.downlink = "reciprocal"`, seed 001's τ_k = L_k/R_k). Those are `scheduled_bits`, the L_k a scheduler divides by
R_k; the round process charges a delay-budget queue exactly their realised air time. A "spread" downlink runs at the
RSU's own power, is neither planned nor charged, and still counts in the round's duration and deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

WireDtype = Literal["float32", "bfloat16", "float16"]
WIRE_BITS: dict[str, int] = {"float32": 32, "bfloat16": 16, "float16": 16}

IntArrayLike = np.ndarray | int | None
FloatArrayLike = np.ndarray | float | None


@dataclass(frozen=True)
class Leg:
    """One transfer of a participant's round, in values: `fixed_values` whatever the rank, plus `per_rank_values` per
    rank component (the part a sparse upload thins out)."""

    kind: Literal["up", "down"]
    fixed_values: int
    per_rank_values: int = 0


@dataclass(frozen=True)
class Payload:
    """A task's transfers per participant and round, in order, as functions of (rank, density); `None` means the
    task's default. `ranks` are the ranks a plan may assign (a split task's server holds one global rank, so it
    offers only that). `adapted_modules` counts the LoRA-adapted linear layers: a sparse upload's bitmap has r bits
    for each. `default_density` is the density of a plan without a density column (learning.compression)."""

    legs: tuple[Leg, ...]
    default_rank: int
    ranks: tuple[int, ...]
    adapted_modules: int
    bits_per_value: int = 32
    reciprocal_downlink: bool = False
    default_density: float = 1.0

    def __post_init__(self) -> None:
        if self.default_rank not in self.ranks:
            raise ValueError(f"default rank {self.default_rank} is not among the allowed ranks {self.ranks}")
        if not 0 < self.default_density <= 1:
            raise ValueError(f"default density must lie in (0, 1], got {self.default_density}")

    @classmethod
    def fixed(cls, upload_bits: int, download_bits: int = 0, reciprocal_downlink: bool = False) -> Payload:
        """A rank-independent exchange (download, then upload) counted in bits: for stand-in tasks and benchmarks."""
        legs = (Leg("down", download_bits), Leg("up", upload_bits)) if download_bits else (Leg("up", upload_bits),)
        return cls(legs, default_rank=1, ranks=(1,), adapted_modules=0, bits_per_value=1,
                   reciprocal_downlink=reciprocal_downlink)

    def rank_of(self, rank: IntArrayLike) -> np.ndarray:
        """The rank column with defaults filled in; ValueError naming the offending ranks if any is not allowed."""
        ranks = np.asarray(self.default_rank if rank is None else rank, dtype=np.int64)
        bad = np.setdiff1d(ranks, self.ranks)
        if len(bad):
            raise ValueError(f"ranks {bad.tolist()} are not offered by this task (allowed: {list(self.ranks)})")
        return ranks

    def kept_components(self, rank: IntArrayLike, density: FloatArrayLike) -> np.ndarray:
        """Rank components a sparse upload keeps per adapted module: round(ρ·r), at least 1, at most r."""
        ranks = self.rank_of(rank)
        rho = np.asarray(self.default_density if density is None else density, dtype=float)
        if np.any(~np.isfinite(rho)) or np.any((rho <= 0) | (rho > 1)):
            raise ValueError(f"density must lie in (0, 1], got {rho.tolist()}")
        return np.clip(np.rint(rho * ranks), 1, ranks).astype(np.int64)

    def leg_bits(self, rank: IntArrayLike = None, density: FloatArrayLike = None) -> list[np.ndarray]:
        """Bits of every leg, in order. Up legs with rank components carry only the kept ones, plus the bitmap."""
        ranks = self.rank_of(rank)
        kept = self.kept_components(ranks, density)
        bitmap = np.where(kept < ranks, self.adapted_modules * ranks, 0)
        bits = []
        for leg in self.legs:
            sparse = leg.kind == "up" and leg.per_rank_values > 0
            components = kept if sparse else ranks
            values = leg.fixed_values + leg.per_rank_values * components
            bits.append(values * self.bits_per_value + (bitmap if sparse else 0))
        return bits

    def _total(self, kinds: tuple[str, ...], rank: IntArrayLike, density: FloatArrayLike) -> np.ndarray:
        legs = self.leg_bits(rank, density)
        return sum((bits for leg, bits in zip(self.legs, legs, strict=True) if leg.kind in kinds),
                   np.zeros(np.shape(legs[0]) if legs else (), dtype=np.int64))

    def upload_bits(self, rank: IntArrayLike = None, density: FloatArrayLike = None) -> np.ndarray:
        return self._total(("up",), rank, density)

    def download_bits(self, rank: IntArrayLike = None) -> np.ndarray:
        return self._total(("down",), rank, None)

    def scheduled_bits(self, rank: IntArrayLike = None, density: FloatArrayLike = None) -> np.ndarray:
        """L_k: the bits a plan carries at the vehicle's uplink rate (see the module doc)."""
        return self._total(("up", "down") if self.reciprocal_downlink else ("up",), rank, density)
