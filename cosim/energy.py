"""On-board unit energy: local computation (dynamic CMOS power), radio transmission, idling, and batteries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ArrayLike = np.ndarray | float


def compute_time_s(cycles_per_sample: ArrayLike, samples: ArrayLike, cpu_hz: ArrayLike) -> ArrayLike:
    """t = C·D/f: cycles per sample × samples processed, at clock frequency f."""
    return cycles_per_sample * samples / cpu_hz


def compute_energy_j(cycles_per_sample: ArrayLike, samples: ArrayLike, cpu_hz: ArrayLike,
                     capacitance: ArrayLike) -> ArrayLike:
    """E = κ·C·D·f²: switched capacitance × cycles × f² (dynamic power κf³ over time CD/f)."""
    return capacitance * cycles_per_sample * samples * cpu_hz**2


def transmit_energy_j(power_w: ArrayLike, duration_s: ArrayLike) -> np.ndarray:
    return np.asarray(power_w) * np.asarray(duration_s)


def idle_energy_j(idle_power_w: ArrayLike, duration_s: ArrayLike) -> np.ndarray:
    """Energy a participant burns while it waits (for the download, the deadline, its turn on the air)."""
    return np.asarray(idle_power_w) * np.asarray(duration_s)


@dataclass(frozen=True)
class DeviceProfile:
    """One class of on-board unit: how fast it trains, what that costs, and its energy budget for learning.

    `cycles_per_sample` counts effective CPU cycles for one sample of the reference workload (one LoRA step of a
    MiniLM-L6-sized encoder on a 64-token input, about 5·10⁹ FLOP), so faster SIMD or an accelerator shows up as
    fewer cycles. `battery_j` is the budget the vehicle grants to learning, not the traction battery."""

    name: str
    cycles_per_sample: float
    cpu_hz: float
    capacitance: float  # effective switched capacitance κ, J/(cycle·Hz²)
    tx_power_w: float
    idle_power_w: float
    battery_j: float

    @property
    def compute_power_w(self) -> float:
        """Dynamic power κ·f³ drawn while training."""
        return self.capacitance * self.cpu_hz**3

    def compute_time_s(self, samples: ArrayLike) -> ArrayLike:
        return compute_time_s(self.cycles_per_sample, samples, self.cpu_hz)

    def compute_energy_j(self, samples: ArrayLike) -> ArrayLike:
        return compute_energy_j(self.cycles_per_sample, samples, self.cpu_hz, self.capacitance)


# Order-of-magnitude classes, documented rather than measured. κ = 1e-28 is the usual value in the federated
# learning literature (e.g. Tran et al., INFOCOM 2019); transmit powers are 3GPP UE power classes (TS 38.101-1
# §6.2.1: class 3 = 23 dBm ≈ 0.2 W, class 2 = 26 dBm ≈ 0.4 W).
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    profile.name: profile for profile in (
        # Telematics box, quad Cortex-A53-class at 1.2 GHz (~16 FLOP/cycle): 0.35 W compute, 0.33 s per sample.
        DeviceProfile("obu-low", cycles_per_sample=4e8, cpu_hz=1.2e9, capacitance=2e-28, tx_power_w=0.2,
                      idle_power_w=0.5, battery_j=1e4),
        # Infotainment-class SoC, Cortex-A7x cluster at 2 GHz: 0.8 W compute, 0.1 s per sample (scenario defaults).
        DeviceProfile("obu-mid", cycles_per_sample=2e8, cpu_hz=2e9, capacitance=1e-28, tx_power_w=0.2,
                      idle_power_w=1.0, battery_j=2e4),
        # ADAS computer with a GPU/NPU (Orin-class), 2.2 GHz: 10.6 W compute, 23 ms per sample.
        DeviceProfile("obu-high", cycles_per_sample=5e7, cpu_hz=2.2e9, capacitance=1e-27, tx_power_w=0.4,
                      idle_power_w=5.0, battery_j=1e5),
    )
}


def device_profile(name: str) -> DeviceProfile:
    """A built-in profile by name, with the valid names in the error."""
    try:
        return DEVICE_PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown device profile {name!r}; choose from {', '.join(DEVICE_PROFILES)}") from None


class Batteries:
    """Energy budgets of many devices indexed by permanent slot; draining stops at zero, never below."""

    def __init__(self) -> None:
        self.capacity_j = np.zeros(0)
        self.level_j = np.zeros(0)

    def __len__(self) -> int:
        return len(self.level_j)

    def add(self, capacity_j: ArrayLike, count: int) -> np.ndarray:
        """Give `count` newcomers full batteries; returns their slots."""
        slots = len(self.level_j) + np.arange(count)
        full = np.broadcast_to(np.asarray(capacity_j, dtype=float), (count,))
        self.capacity_j = np.concatenate([self.capacity_j, full])
        self.level_j = np.concatenate([self.level_j, full])
        return slots

    def drain(self, slots: np.ndarray | int, energy_j: ArrayLike) -> np.ndarray:
        """Take energy from slots (repeats add up), never more than is left; returns each listed slot's total draw."""
        slots = np.atleast_1d(slots)
        wanted = np.zeros(len(self.level_j))
        np.add.at(wanted, slots, np.broadcast_to(energy_j, slots.shape))
        drawn = np.minimum(wanted, self.level_j)
        self.level_j = self.level_j - drawn
        return drawn[slots]

    @property
    def depleted(self) -> np.ndarray:
        return self.level_j <= 0.0

    @property
    def fraction(self) -> np.ndarray:
        """State of charge in [0, 1]."""
        return np.divide(self.level_j, self.capacity_j, out=np.zeros(len(self)), where=self.capacity_j > 0)
