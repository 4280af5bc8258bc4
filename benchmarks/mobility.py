"""How much the mobility layer costs on top of SUMO, at 1,000 and 5,000 concurrent vehicles with 25 RSUs.

The same deterministic SUMO simulation (a 20 x 20 grid, 2 lanes, 200 m blocks, random trips every 0.05 s) runs twice
in lockstep, one mobility tick at a time, for libsumo and TraCI with SUMO step = tick, then libsumo with step = tick/2:
  * SUMO alone, in a worker process: bare simulationStep, nothing subscribed or read back;
  * full layer, here: SumoMobility.advance (step + every vehicle's position, speed and heading as arrays), then RSRP
    from a d^-3.5 path loss, Association.update (hysteresis, time-to-trigger, interruption) and dwell_time_s.
The two take turns tick by tick (never running at once), so load from other processes on the host hits both alike.
For each size the window is the WINDOW_TICKS ticks after the vehicle count first reaches it; per-tick medians.
Host wall time only; run: .venv/bin/python benchmarks/mobility.py
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mobility.association import Association
from mobility.netgen import SumoFiles, default_cache_dir, grid_scenario, sumo_home
from mobility.rsu import dwell_time_s, grid_layout
from mobility.sumo import SumoMobility

SIZES = (1000, 5000)
WINDOW_TICKS = 20
TICK_S = 1.0
SEED = 1
RSU_GRID = 5  # 5 x 5 = 25 RSUs
MAX_SIM_S = 900.0


def scenario() -> SumoFiles:
    """The benchmark network and demand, from the content-hash cache (built once, in seconds)."""
    return grid_scenario(default_cache_dir() / "sumo", junctions=20, edge_length_m=200.0, lanes=2,
                         trip_period_s=0.05, end_s=600.0, seed=SEED)


def _bare_worker(conn: Connection, files: SumoFiles, backend: str, step_length_s: float) -> None:
    """SUMO started with the options SumoMobility uses, minus any subscription; steps to each tick it is sent and
    answers (seconds spent stepping, vehicle count)."""
    cmd = [str(sumo_home() / "bin" / "sumo"), "--no-step-log", "--no-warnings", "-n", str(files.net),
           "-r", ",".join(map(str, files.routes)), "--step-length", str(step_length_s),
           "--seed", str(SEED), "--time-to-teleport", "300"]
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "libsumo":
            import libsumo as api
        else:
            import traci as api
        api.start(cmd)
    try:
        while (k := conn.recv()) is not None:
            began = time.perf_counter()
            api.simulationStep(k * TICK_S)
            conn.send((time.perf_counter() - began, api.vehicle.getIDCount()))
    finally:
        api.close()


def measure(files: SumoFiles, backend: str, step_length_s: float) -> dict[int, tuple[float, float, float, int]]:
    """Per size: median seconds per tick of bare SUMO, of SumoMobility.advance and of the numpy layer after it,
    and the median vehicle count, over that size's window."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=_bare_worker, args=(child, files, backend,
                                                                                       step_length_s))
    worker.start()
    mobility = SumoMobility(files, step_length_s=step_length_s, seed=SEED, backend=backend)  # type: ignore[arg-type]
    xmin, ymin, xmax, ymax = mobility.bounds()
    rsus = grid_layout((xmin, ymin, xmax, ymax), rows=RSU_GRID, cols=RSU_GRID,
                       radius_m=0.75 * (xmax - xmin) / RSU_GRID, height_m=10.0, bandwidth_hz=10e6)
    assoc = Association(hysteresis_db=3.0, time_to_trigger_s=2.0, interruption_s=0.05)
    windows: dict[int, list[tuple[float, float, float, int]]] = {}
    try:
        for k in range(1, int(MAX_SIM_S / TICK_S)):
            parent.send(k)
            bare_s, count = parent.recv()
            began = time.perf_counter()
            snap = mobility.advance(k * TICK_S)
            stepped = time.perf_counter()
            d2 = rsus.distances_m(snap.xy_m)
            rsrp_dbm = 30.0 - 38.0 - 35.0 * np.log10(np.hypot(d2, rsus.height_m - 1.5))
            serving, _ = assoc.update(snap.time_s, snap.ids, rsrp_dbm, d2 <= rsus.radius_m)
            assoc.interrupted(snap.time_s)
            dwell_time_s(rsus, serving, snap.xy_m, snap.speed_mps, snap.heading_rad)
            row = (bare_s, stepped - began, time.perf_counter() - stepped, count)
            for size in SIZES:
                if count >= size or size in windows:
                    windows.setdefault(size, []).append(row)
            if all(len(windows.get(size, [])) >= WINDOW_TICKS for size in SIZES):
                break
        else:
            raise SystemExit(f"the benchmark demand never reached {max(SIZES)} vehicles in {MAX_SIM_S} s")
    finally:
        parent.send(None)
        worker.join()
        mobility.close()
    medians = {size: np.median(np.asarray(rows[:WINDOW_TICKS]), axis=0) for size, rows in windows.items()}
    return {size: (m[0], m[1], m[2], int(m[3])) for size, m in medians.items()}


def main() -> None:
    began = time.perf_counter()
    files = scenario()
    print(f"scenario: {files.net.parent.name}/{files.net.name} + {files.routes[0].parent.name}/{files.routes[0].name}"
          f"; mobility tick {TICK_S} s, {RSU_GRID * RSU_GRID} RSUs, {WINDOW_TICKS}-tick windows")
    # Reading the vehicles happens once per mobility tick, SUMO steps as often as its step length says: with a
    # finer SUMO step (better car following) the layer's share shrinks.
    runs = {"libsumo": ("libsumo", TICK_S), "traci": ("traci", TICK_S), "libsumo, step tick/2": ("libsumo", TICK_S / 2)}
    backends = tuple(runs)
    results = {label: measure(files, backend, step) for label, (backend, step) in runs.items()}
    print(f"{'vehicles':>8} {'backend':>20} {'SUMO alone':>11} {'advance':>9} {'assoc+dwell':>11} {'full layer':>11} "
          f"{'overhead':>9} {'numpy part':>10}")
    full: Callable[[str, int], float] = lambda backend, size: sum(results[backend][size][1:3])  # noqa: E731
    for size in SIZES:
        for backend in backends:
            bare, advance, numpy_s, count = results[backend][size]
            print(f"{count:>8} {backend:>20} {bare * 1e3:>8.1f} ms {advance * 1e3:>6.1f} ms {numpy_s * 1e3:>8.1f} ms "
                  f"{full(backend, size) * 1e3:>8.1f} ms {full(backend, size) / bare - 1:>+9.0%} "
                  f"{numpy_s / bare:>+10.0%}")
    for size in SIZES:
        lib, tra = (full(backend, size) for backend in ("libsumo", "traci"))
        print(f"at ~{size} vehicles: full layer {lib * 1e3:.1f} ms/tick with libsumo, {tra * 1e3:.1f} ms with TraCI "
              f"(TraCI/libsumo {tra / lib:.2f}x)")
    print(f"total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
