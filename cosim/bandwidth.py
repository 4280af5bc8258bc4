"""FDMA bandwidth for a delay target: the Lambert-W closed form (seed 001, P3) and the equal-finish split (P2).

A device with a = p·h/N0 (Hz) on a share B carries R = B·log2(1 + a/B). R grows with B but saturates at a/ln2, so a
rate at or above that cannot be carried by any bandwidth; such entries come back as +inf, never as a number.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import lambertw

LN2 = math.log(2.0)
_SERIES_BELOW = 1e-2  # 1 − c under which −c·e^{−c} sits too close to the branch point −1/e for W to be accurate
_NEWTON_STEPS = 2  # on log1p(x) = c·x: from W (≤1e-13) or the series (≤2e-4) to machine precision


def snr_bandwidth_hz(power_w: np.ndarray | float, gain: np.ndarray | float, noise_psd_w_per_hz: float) -> np.ndarray:
    """a = p·h/N0: the share at which the SNR is 1; a/ln2 is the rate the device reaches with unlimited bandwidth."""
    return np.asarray(power_w, dtype=float) * np.asarray(gain, dtype=float) / noise_psd_w_per_hz


def _snr_for_efficiency(c: np.ndarray) -> np.ndarray:
    """The SNR x = a/B solving log1p(x) = c·x for 0 < c < 1 (c = R·ln2/a is the rate as a fraction of its limit).

    Closed form x = z − 1 with z = −W_{−1}(−c·e^{−c})/c; near c → 1 the branch-point series x ≈ 2δ + 8δ²/3 (δ = 1 − c)
    replaces it, and Newton steps polish both (the function is concave, so they converge from either side of the root).
    """
    delta = 1.0 - c
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        x = np.where(delta < _SERIES_BELOW, 2.0 * delta + 8.0 / 3.0 * delta**2,
                     -lambertw(-c * np.exp(-c), k=-1).real / c - 1.0)
        for _ in range(_NEWTON_STEPS):
            step = (np.log1p(x) - c * x) / (1.0 / (1.0 + x) - c)
            x = np.where(np.isfinite(step), x - step, x)  # x = inf (c below ~1e-306): B = a/x = 0 already
    return x


def required_bandwidth_hz(rate_bps: np.ndarray | float, a_hz: np.ndarray | float) -> np.ndarray:
    """The smallest share that carries `rate_bps`: B = a/x with x from the Lambert-W closed form.

    +inf where no bandwidth suffices (rate ≥ a/ln2, or a ≤ 0); 0 where the rate is 0.
    """
    rate, a = np.broadcast_arrays(np.asarray(rate_bps, dtype=float), np.asarray(a_hz, dtype=float))
    solvable = (rate > 0) & (a > 0) & (rate * LN2 < a)
    out = np.where(rate <= 0, 0.0, np.inf)
    out[solvable] = a[solvable] / _snr_for_efficiency(rate[solvable] * LN2 / a[solvable])
    return out


def _need_and_slope(bits: np.ndarray, a: np.ndarray, delay_s: np.ndarray,
                    cap: float) -> tuple[np.ndarray, np.ndarray]:
    """B_k(τ) and dB_k/dτ for devices that all have c = L·ln2/(a·τ) < 1. Uncapped: B = a/x, slope
    a·c / (τ·(x/(1+x) − log1p x)); where the spectral-efficiency cap η binds, B = L/(τ·η) and the slope is −B/τ."""
    c = bits * LN2 / (a * delay_s)
    x = _snr_for_efficiency(c)
    need, slope = a / x, a * c / (delay_s * (x / (1.0 + x) - np.log1p(x)))
    capped = bits / (delay_s * cap)
    return np.maximum(need, capped), np.where(capped > need, -capped / delay_s, slope)


def equal_finish_split(bits: np.ndarray | float, a_hz: np.ndarray, group: np.ndarray, group_bandwidth_hz: np.ndarray,
                       max_spectral_efficiency: float = math.inf, rtol: float = 1e-13,
                       max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Each group (an RSU's band, or one candidate set) shares its band so that all members finish together.

    That common delay is the group's smallest possible max delay (P2). Σ_k B_k(τ) falls in τ, so τ is the root of
    Σ_k B_k(τ) = B_g, bracketed by max L·ln2/a (where the worst member needs infinite bandwidth) and the equal-split
    delay (where every member needs at most B_g/n). The bracket shrinks as in bisection; Newton steps on
    log Σ B_k = log B_g over log τ (near-linear: Σ B_k ~ 1/τ) inside it converge in a handful of iterations, with
    bisection taking over whenever a step would leave the bracket. Only unfinished groups are re-evaluated.
    A spectral-efficiency cap η (rate ≤ η·B) only raises each member's need to max(B_k(τ), L/(τ·η)).
    Members need a > 0 and every group with members a band > 0. Returns (τ per group, 0 if empty; share per member),
    the shares rescaled so that each group's sum is exactly its band.
    """
    a = np.asarray(a_hz, dtype=float)
    bits = np.broadcast_to(np.asarray(bits, dtype=float), a.shape)
    band = np.asarray(group_bandwidth_hz, dtype=float)
    count = np.bincount(group, minlength=len(band))
    lo, hi = np.zeros(len(band)), np.zeros(len(band))
    np.maximum.at(lo, group, bits * LN2 / a)
    equal = band[group] / count[group]
    np.maximum.at(hi, group, bits / (equal * np.minimum(np.log1p(a / equal) / LN2, max_spectral_efficiency)))
    tau = hi.copy()
    active = count > 0
    for _ in range(max_iter):
        if not active.any():
            break
        on = active[group]
        need, slope = _need_and_slope(bits[on], a[on], tau[group[on]], max_spectral_efficiency)
        total = np.bincount(group[on], need, minlength=len(band))
        excess = total - band
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # finished groups: 0/0, masked below
            newton = tau * np.exp(-np.log(total / band) * total / (tau * np.bincount(group[on], slope,
                                                                                       minlength=len(band))))
        lo = np.where(active & (excess > 0), tau, lo)
        hi = np.where(active & (excess <= 0), tau, hi)
        active &= (np.abs(excess) > rtol * band) & (hi - lo > rtol * hi)
        inside = (newton > lo) & (newton < hi)
        tau = np.where(active, np.where(inside, newton, 0.5 * (lo + hi)), tau)
    need = _need_and_slope(bits, a, tau[group], max_spectral_efficiency)[0]
    return np.where(count > 0, tau, 0.0), need * (band[group] / np.bincount(group, need, minlength=len(band))[group])
