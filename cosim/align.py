"""Carry per-vehicle arrays from one snapshot to the next as vehicles enter and leave."""

from __future__ import annotations

import numpy as np


def realign(prev_ids: np.ndarray, prev_values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `prev_values` (aligned with sorted `prev_ids`) re-ordered to sorted `ids`.

    Returns (known, values): `known[i]` tells whether ids[i] was present before; rows of unknown ids are zero."""
    pos = np.searchsorted(prev_ids, ids)
    pos_clipped = np.minimum(pos, max(len(prev_ids) - 1, 0))
    known = (pos < len(prev_ids)) & (prev_ids[pos_clipped] == ids) if len(prev_ids) else np.zeros(len(ids), bool)
    values = np.zeros((len(ids), *prev_values.shape[1:]), dtype=prev_values.dtype)
    values[known] = prev_values[pos_clipped[known]]
    return known, values
