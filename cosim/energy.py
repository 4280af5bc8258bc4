"""On-board unit energy: local computation (dynamic CMOS power) and radio transmission."""

from __future__ import annotations

import numpy as np


def compute_time_s(cycles_per_sample: float, samples: int, cpu_hz: float) -> float:
    """t = C·D/f: cycles per sample × samples processed, at clock frequency f."""
    return cycles_per_sample * samples / cpu_hz


def compute_energy_j(cycles_per_sample: float, samples: int, cpu_hz: float, capacitance: float) -> float:
    """E = κ·C·D·f²: switched capacitance × cycles × f² (dynamic power κf³ over time CD/f)."""
    return capacitance * cycles_per_sample * samples * cpu_hz**2


def transmit_energy_j(power_w: np.ndarray | float, duration_s: np.ndarray | float) -> np.ndarray:
    return np.asarray(power_w) * np.asarray(duration_s)
