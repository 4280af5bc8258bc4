"""Decision time per round of the seed-001 schedulers vs the number of vehicles (the paper's Fig. 6, static setting).

Paper setting: one server at the centre, vehicles uniform in a disk, large-scale fading (d/d0)^−α with Rayleigh
fading redrawn every round, one band shared by FDMA. Each round is planned, then fed back with its planned delay so
the virtual queues evolve as in a run. Prints the median and 90th-percentile wall time of `plan` in ms.

    .venv/bin/python -m benchmarks.seed001_decision [--rounds 30] [--rsus 1] [--tau-bar 0.05]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cosim.payload import Payload
from cosim.radio import RateModel, shannon_rate_bps
from cosim.schedulers import Observation, RoundFeedback, make_scheduler
from cosim.schedulers.lyapunov import AabaConfig, GsConfig, LyapunovConfig

VEHICLES = (10, 50, 100, 500)
RADIUS_M, ALPHA, REFERENCE_GAIN = 500.0, 3.0, 1e-3  # gain = REFERENCE_GAIN·d^−α·|h|², |h|² ~ Exp(1)
POWER_W, NOISE_PSD, BAND_HZ, BITS = 0.2, 4e-21, 20e6, 1_000_000


def decision_times_ms(config: LyapunovConfig | AabaConfig | GsConfig, vehicles: int, rsus: int, rounds: int,
                      rng: np.random.Generator, *, bits: int = BITS, band_hz: float = BAND_HZ) -> np.ndarray:
    """Wall time of each round's `plan` for one scheduler on i.i.d. rounds of the static disk (payload `bits` per
    vehicle, `band_hz` shared by the RSUs)."""
    distance = RADIUS_M * np.sqrt(rng.uniform(1e-4, 1.0, vehicles))  # uniform in the disk, at least 5 m out
    rsu = np.arange(vehicles) % rsus
    scheduler = make_scheduler(config, np.random.default_rng(0))
    times = np.zeros(rounds)
    for t in range(rounds):
        gain = REFERENCE_GAIN * distance**-ALPHA * rng.exponential(size=vehicles)
        obs = Observation(
            round_index=t, time_s=float(t), vehicles=np.arange(vehicles), rsu=rsu, distance_m=distance, gain=gain,
            speed_mps=np.zeros(vehicles), dwell_s=np.full(vehicles, np.inf),
            battery_j=np.ones(vehicles), tx_power_w=np.full(vehicles, POWER_W),
            compute_time_s=np.zeros(vehicles), rsu_bandwidth_hz=np.full(rsus, band_hz / rsus),
            rate=RateModel(NOISE_PSD), payload=Payload.fixed(bits), deadline_s=np.inf)
        start = time.perf_counter()
        plan = scheduler.plan(obs)
        times[t] = (time.perf_counter() - start) * 1e3
        chosen = plan.participants
        delay = float(np.max(bits / shannon_rate_bps(plan.bandwidth_hz, POWER_W, gain[chosen], NOISE_PSD),
                             initial=0.0))
        k = len(chosen)
        scheduler.observe(RoundFeedback(t, delay, delay, np.ones(k, dtype=bool), np.zeros(k), None, np.full(k, delay)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--rsus", type=int, default=1, help="split the band over this many RSUs")
    parser.add_argument("--tau-bar", type=float, default=0.05, help="delay budget τ̄ in seconds")
    args = parser.parse_args()
    configs = {"lyapunov": LyapunovConfig(name="lyapunov", tau_bar_s=args.tau_bar),
               "aaba": AabaConfig(name="aaba", tau_bar_s=args.tau_bar),
               "gs": GsConfig(name="gs", tau_bar_s=args.tau_bar)}
    print(f"decision time per round, ms (median / p90), {args.rounds} rounds, {args.rsus} RSU(s), τ̄={args.tau_bar} s")
    print(f"{'vehicles':>8}" + "".join(f"{name:>20}" for name in configs))
    for vehicles in VEHICLES:
        cells = []
        for config in configs.values():
            times = decision_times_ms(config, vehicles, args.rsus, args.rounds, np.random.default_rng(vehicles))
            cells.append(f"{np.median(times):9.2f} / {np.percentile(times, 90):8.2f}")
        print(f"{vehicles:>8}" + "".join(f"{cell:>20}" for cell in cells))


if __name__ == "__main__":
    main()
