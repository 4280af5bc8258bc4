"""The figures researchers look at first, drawn from a run directory's tables."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes


def accuracy_vs_time(run: dict[str, Any], ax: Axes) -> None:
    rounds = run["rounds"].dropna(subset=["accuracy"])
    ax.plot(rounds["end_s"], rounds["accuracy"], marker="o")
    majority = run["manifest"].get("majority_rate")
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="--", label="majority class")
        ax.legend()
    ax.set(xlabel="simulated time (s)", ylabel="held-out accuracy", title="Accuracy")


def upload_delay_cdf(run: dict[str, Any], ax: Axes) -> None:
    delays = np.sort(run["participants"]["upload_delay_s"].dropna().to_numpy())
    ax.step(delays, np.arange(1, len(delays) + 1) / max(len(delays), 1), where="post")
    ax.set(xlabel="upload delay (s)", ylabel="CDF", title="Upload delay")


def energy_per_vehicle(run: dict[str, Any], ax: Axes) -> None:
    energy = run["participants"].groupby("vehicle")["energy_j"].sum().sort_values(ascending=False)
    ax.bar(np.arange(len(energy)), energy.to_numpy())
    ax.set(xlabel="vehicle (sorted)", ylabel="energy spent (J)", title="Energy per vehicle")
