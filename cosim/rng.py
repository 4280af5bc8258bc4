"""One seed, one independent random stream per component, so adding draws in one never shifts another."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, component: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(component.encode())])
