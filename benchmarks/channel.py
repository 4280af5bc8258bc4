"""Cost of one mobility tick of the channel layer: UMi path loss with LOS state, shadowing and correlated fading.

Times cosim.channel (LargeScaleChannel + CorrelatedFading) for 5,000 vehicles × 25 RSUs, and the same arithmetic
written inline in plain numpy with no id bookkeeping, to show the layer's overhead. Prints µs per vehicle–link.

    .venv/bin/python -m benchmarks.channel [--vehicles 5000] [--rsus 25] [--ticks 10] [--churn 0.02]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import numpy as np
from scipy.special import ndtr

from cosim.channel import SPEED_OF_LIGHT_MPS, CorrelatedFading, LargeScaleChannel
from mobility.rsu import Links

CARRIER_HZ, RSU_HEIGHT_M, VEHICLE_HEIGHT_M, AREA_M, SINUSOIDS = 5.9e9, 10.0, 1.5, 2_000.0, 16


class Traffic:
    """Vehicles on straight random headings inside a square; a fraction is replaced by newcomers every tick."""

    def __init__(self, vehicles: int, churn: float, rng: np.random.Generator) -> None:
        self.rng, self.churn, self.next_id = rng, churn, vehicles
        self.ids = np.array([f"v{i:07d}" for i in range(vehicles)])
        self.xy = rng.uniform(0, AREA_M, (vehicles, 2))
        self.heading = rng.uniform(0, 2 * math.pi, vehicles)
        self.speed = rng.uniform(5, 30, vehicles)

    def step(self, dt: float) -> None:
        self.xy = (self.xy + dt * self.speed[:, None] * np.column_stack([np.cos(self.heading),
                                                                          np.sin(self.heading)])) % AREA_M
        leavers = self.rng.random(len(self.ids)) < self.churn
        count = int(leavers.sum())
        self.ids = self.ids.copy()
        self.ids[leavers] = [f"v{i:07d}" for i in range(self.next_id, self.next_id + count)]
        self.next_id += count
        order = np.argsort(self.ids)
        self.ids, self.xy, self.heading, self.speed = (a[order] for a in (self.ids, self.xy, self.heading, self.speed))


def layer_tick(large: LargeScaleChannel, fading: CorrelatedFading, traffic: Traffic, rsu_xy: np.ndarray,
               t: float) -> np.ndarray:
    d_2d = np.linalg.norm(traffic.xy[:, None, :] - rsu_xy[None, :, :], axis=2)
    loss_db, _ = large.update(traffic.ids, traffic.xy, Links.every(d_2d), np.full(len(rsu_xy), RSU_HEIGHT_M),
                              VEHICLE_HEIGHT_M)
    return np.power(10.0, -loss_db.reshape(d_2d.shape) / 10.0) * fading.update(traffic.ids, traffic.speed, t)


class Inline:
    """The same formulas for a fixed population: arrays indexed by row, no ids, no re-alignment, no dispatch.

    `float32_trig` mirrors the layer's numerics (phases reduced in float64, trigonometry in float32); without it
    the fading is the textbook complex128 exp, to show what that choice buys."""

    def __init__(self, n: int, m: int, rng: np.random.Generator, float32_trig: bool) -> None:
        self.rng, self.float32_trig = rng, float32_trig
        self.decorrelation = np.repeat([10.0, 13.0, 50.0], m)  # TR 38.901 Table 7.5-6 and Table 7.6.3.1-2
        self.fields = rng.standard_normal((n, 3 * m))
        self.xy = np.zeros((n, 2))
        k = 2 * math.pi * CARRIER_HZ / SPEED_OF_LIGHT_MPS
        angles = (2 * math.pi * np.arange(SINUSOIDS) + rng.uniform(0, 2 * math.pi, (n, m, 1))) / SINUSOIDS
        self.spatial = k * np.cos(angles)
        taps = (rng.standard_normal((n, m, SINUSOIDS)) + 1j * rng.standard_normal((n, m, SINUSOIDS)))
        self.taps = taps * math.sqrt(0.5 / SINUSOIDS)
        self.taps_re, self.taps_im = self.taps.real.astype(np.float32), self.taps.imag.astype(np.float32)
        self.travelled = np.zeros(n)

    def tick(self, xy: np.ndarray, speed: np.ndarray, rsu_xy: np.ndarray, dt: float) -> np.ndarray:
        m = len(rsu_xy)
        # Gudmundson AR(1) along the path for LOS shadowing, NLOS shadowing and the LOS-state variable
        rho = np.exp(-np.linalg.norm(xy - self.xy, axis=1)[:, None] / self.decorrelation)
        self.xy = xy
        self.fields = rho * self.fields + np.sqrt(1 - rho**2) * self.rng.standard_normal(self.fields.shape)
        # TR 38.901 Table 7.4.1-1 UMi street canyon, LOS probability of Table 7.4.2-1
        d_2d = np.maximum(np.linalg.norm(xy[:, None, :] - rsu_xy[None, :, :], axis=2), 10.0)
        d_3d = np.hypot(d_2d, RSU_HEIGHT_M - VEHICLE_HEIGHT_M)
        f_ghz = CARRIER_HZ / 1e9
        d_bp = 4 * (RSU_HEIGHT_M - 1) * (VEHICLE_HEIGHT_M - 1) * CARRIER_HZ / 3e8
        pl1 = 32.4 + 21 * np.log10(d_3d) + 20 * math.log10(f_ghz)
        pl2 = (32.4 + 40 * np.log10(d_3d) + 20 * math.log10(f_ghz)
               - 9.5 * math.log10(d_bp**2 + (RSU_HEIGHT_M - VEHICLE_HEIGHT_M) ** 2))
        los_db = np.where(d_2d <= d_bp, pl1, pl2)
        nlos_db = np.maximum(los_db, 35.3 * np.log10(d_3d) + 22.4 + 21.3 * math.log10(f_ghz))
        p_los = np.where(d_2d <= 18, 1.0, 18 / d_2d + np.exp(-d_2d / 36) * (1 - 18 / d_2d))
        los = ndtr(self.fields[:, 2 * m:]) < p_los
        loss = np.where(los, los_db - 4.0 * self.fields[:, :m], nlos_db - 7.82 * self.fields[:, m:2 * m])
        # sum of sinusoids over the distance travelled
        self.travelled += speed * dt
        phase = self.spatial * self.travelled[:, None, None]
        if self.float32_trig:
            phase32 = (phase - 2 * math.pi * np.rint(phase / (2 * math.pi))).astype(np.float32)
            cos, sin = np.cos(phase32), np.sin(phase32)
            real = np.einsum("vrn,vrn->vr", cos, self.taps_re) - np.einsum("vrn,vrn->vr", sin, self.taps_im)
            imag = np.einsum("vrn,vrn->vr", sin, self.taps_re) + np.einsum("vrn,vrn->vr", cos, self.taps_im)
            power = real.astype(float) ** 2 + imag.astype(float) ** 2
        else:
            h = np.einsum("vrn,vrn->vr", np.exp(1j * phase), self.taps)
            power = h.real**2 + h.imag**2
        return np.power(10.0, -loss / 10.0) * power


def timed(advance, compute, ticks: int) -> float:
    """Median seconds of `compute` per tick (mobility `advance` untimed), after one warm-up tick."""
    samples = []
    for t in range(ticks + 1):
        advance()
        start = time.perf_counter()
        compute(float(t))
        samples.append(time.perf_counter() - start)
    return float(np.median(samples[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=5_000)
    parser.add_argument("--rsus", type=int, default=25)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--churn", type=float, default=0.02, help="fraction of vehicles replaced per tick")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    side = math.isqrt(args.rsus)
    rsu_xy = rng.uniform(0, AREA_M, (args.rsus, 2)) if side * side != args.rsus else np.stack(np.meshgrid(
        *[np.linspace(AREA_M / side / 2, AREA_M - AREA_M / side / 2, side)] * 2), -1).reshape(-1, 2)
    links = args.vehicles * args.rsus
    print(f"{args.vehicles} vehicles × {args.rsus} RSUs = {links} links, UMi + shadowing + "
          f"{SINUSOIDS}-sinusoid fading at {CARRIER_HZ / 1e9} GHz, median of {args.ticks} ticks")
    results = {}
    for churn in (0.0, args.churn):
        traffic = Traffic(args.vehicles, churn, np.random.default_rng(1))
        large = LargeScaleChannel("umi", CARRIER_HZ, np.random.default_rng(2))
        fading = CorrelatedFading(args.rsus, CARRIER_HZ, np.random.default_rng(3), SINUSOIDS)
        results[f"cosim.channel, churn {churn:.0%}/tick"] = timed(
            partial(traffic.step, 1.0), partial(layer_tick, large, fading, traffic, rsu_xy), args.ticks)
    for float32_trig, label in ((True, "inline numpy, same numerics"), (False, "inline numpy, complex128 exp")):
        traffic = Traffic(args.vehicles, 0.0, np.random.default_rng(1))
        inline = Inline(args.vehicles, args.rsus, np.random.default_rng(2), float32_trig)
        results[label] = timed(partial(traffic.step, 1.0),
                               lambda t, inline=inline, traffic=traffic: inline.tick(traffic.xy, traffic.speed,
                                                                                     rsu_xy, 1.0), args.ticks)
    baseline = results["inline numpy, same numerics"]
    for name, seconds in results.items():
        print(f"{name:36s} {seconds * 1e3:8.1f} ms/tick  {seconds / links * 1e6:6.3f} µs/link  "
              f"× {seconds / baseline:4.2f} inline")


if __name__ == "__main__":
    main()
