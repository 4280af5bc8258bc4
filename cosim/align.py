"""Carry per-vehicle arrays from one snapshot to the next as vehicles enter and leave."""

from __future__ import annotations

import numpy as np

from mobility.rsu import Links


def realign(prev_ids: np.ndarray, prev_values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `prev_values` (aligned with sorted `prev_ids`) re-ordered to sorted `ids`.

    Returns (known, values): `known[i]` tells whether ids[i] was present before; rows of unknown ids are zero."""
    known, pos = _matching(prev_ids, ids)
    if not len(prev_ids):
        return known, np.zeros((len(ids), *prev_values.shape[1:]), dtype=prev_values.dtype)
    # One gather of every row (a newcomer reads its neighbour's, then zeroed): a city tick's (n, m) arrays move
    # several times faster than through boolean-mask indexing.
    values = prev_values.take(pos, axis=0)
    values[~known] = 0
    return known, values


def realign_links(prev_ids: np.ndarray, prev_links: Links, prev_values: np.ndarray, ids: np.ndarray,
                  links: Links) -> tuple[np.ndarray, np.ndarray]:
    """Per-link state carried from one instant's links to the next: (known, values), known[l] when links[l] (same
    vehicle, same RSU) existed before; values of new links are zero."""
    at = links.carried_from(prev_links, *_matching(prev_ids, ids))
    known = at >= 0
    values = prev_values.take(np.maximum(at, 0), axis=0) if len(prev_links) else np.zeros(
        (len(links), *prev_values.shape[1:]), prev_values.dtype)
    values[~known] = 0
    return known, values


_last: list = []  # (prev_ids, ids, known, pos) of the last call: every component realigns the same two id arrays


def _matching(prev_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ids were present before, and for every id the row of prev_ids it matches (clipped, meaningless where
    not known); the string search is done once per pair of arrays (the arrays are held, so their identities cannot
    be reused while cached)."""
    if _last and _last[0] is prev_ids and _last[1] is ids:
        return _last[2].copy(), _last[3]
    pos = np.searchsorted(prev_ids, ids)
    pos_clipped = np.minimum(pos, max(len(prev_ids) - 1, 0))
    known = (pos < len(prev_ids)) & (prev_ids[pos_clipped] == ids) if len(prev_ids) else np.zeros(len(ids), bool)
    _last[:] = [prev_ids, ids, known.copy(), pos_clipped]
    return known, pos_clipped
