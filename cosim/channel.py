"""Large- and small-scale channel models, vectorised over vehicle–RSU links (pure numpy, no SimPy)."""

from __future__ import annotations

import numpy as np

from cosim.align import realign


def db_to_linear(db: np.ndarray | float) -> np.ndarray:
    return np.power(10.0, np.asarray(db) / 10.0)


def noise_psd_w_per_hz(psd_dbm_per_hz: float, noise_figure_db: float) -> float:
    """Thermal noise PSD raised by the receiver's noise figure, in W/Hz."""
    return float(db_to_linear(psd_dbm_per_hz + noise_figure_db)) * 1e-3


def simple_pathloss_db(distance_m: np.ndarray, reference_loss_db: float, reference_distance_m: float,
                       exponent: float) -> np.ndarray:
    """PL(d) = PL0 + 10·α·log10(d/d0): the power-law model PL0·(d/d0)^-α of the seed papers, in dB.

    Distances below d0 are clamped to d0 so the model never predicts gain."""
    ratio = np.maximum(np.asarray(distance_m, dtype=float), reference_distance_m) / reference_distance_m
    return reference_loss_db + 10.0 * exponent * np.log10(ratio)


class Shadowing:
    """Log-normal shadowing that decorrelates along each vehicle's path (Gudmundson's exponential model).

    Each vehicle–RSU link carries a shadowing value s; after the vehicle moves Δd metres,
    s ← ρ·s + sqrt(1-ρ²)·σ·n with ρ = exp(-Δd/d_corr), so E[s(d)s(d+Δd)] = σ²·exp(-Δd/d_corr)."""

    def __init__(self, std_db: float, decorrelation_m: float, num_rsus: int, rng: np.random.Generator) -> None:
        self.std_db = std_db
        self.decorrelation_m = decorrelation_m
        self.num_rsus = num_rsus
        self.rng = rng
        self._ids = np.array([], dtype=str)
        self._xy = np.zeros((0, 2))
        self._db = np.zeros((0, num_rsus))

    def update(self, ids: np.ndarray, xy_m: np.ndarray) -> np.ndarray:
        """Shadowing (n, m) in dB for vehicles `ids` (sorted) at positions `xy_m`."""
        known, prev_xy = realign(self._ids, self._xy, ids)
        _, prev_db = realign(self._ids, self._db, ids)
        moved = np.linalg.norm(xy_m - prev_xy, axis=1)
        rho = np.where(known, np.exp(-moved / self.decorrelation_m), 0.0)[:, None]
        fresh = self.rng.standard_normal((len(ids), self.num_rsus)) * self.std_db
        self._ids, self._xy = ids, xy_m
        self._db = rho * prev_db + np.sqrt(1.0 - rho**2) * fresh
        return self._db


def rayleigh_power(size: int, rng: np.random.Generator) -> np.ndarray:
    """Block-fading power gain |h|² of a unit-power Rayleigh channel: exponential with mean 1."""
    return rng.exponential(1.0, size)
