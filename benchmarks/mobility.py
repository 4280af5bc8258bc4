"""What the mobility layer costs on top of SUMO at city scale, and what a warm start from SUMO's saved state saves.

The same deterministic SUMO simulation (a grid of 200 m blocks, 2 lanes, random trips every --period s) runs twice in
lockstep, one mobility tick at a time, taking turns so that load from other processes hits both alike:
  * SUMO alone, in a worker process: bare simulationStep, nothing subscribed or read back;
  * the full layer, here: SumoMobility.advance (every vehicle's position, speed and heading), then World.refresh,
    the radio world of a run: the links in coverage, their path loss and shadowing, layer-3 filtered association with
    hysteresis and time-to-trigger, fast fading of the serving and candidate links, dwell times, batteries.
For each size the window is the --window ticks after the vehicle count first reaches it; per-tick medians, and the
ratio full layer / SUMO alone. Then the warm start: reaching the window's start by re-simulating from 0 s against
loading SUMO's state saved there (what `mobility.warm_start` caches), and the ping-pong share of the run's handovers.
Then the cost of writing traces per round early and late in a 500-round run (benchmarks/trace.py), and the peak
resident memory of whole `cosim run`s of this city in fresh processes: from the time the largest size is reached, for
each of --memory-s simulated seconds (default 1800: 30 minutes), tiny model, 10 random participants a round; with
two or more durations, the linear extrapolation to 30 minutes too.
Host wall time only (trace writing: CPU time); run:
    .venv/bin/python -m benchmarks.mobility [--sizes 5000 10000] [--rsus 81] [--fading jakes] [--memory-s 1800]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from benchmarks import trace as trace_benchmark
from cosim.scenario import parse_scenario
from cosim.trace import read_table
from cosim.world import World
from mobility.association import HandoverEvent, ping_pong_fraction
from mobility.config import RsuConfig, grid_shape
from mobility.netgen import SumoFiles, default_cache_dir, grid_scenario, sumo_home
from mobility.rsu import grid_layout, net_bounds
from mobility.snapshot import Snapshot
from mobility.sumo import SumoMobility

SEED = 1


def scenario(junctions: int, period_s: float, end_s: float) -> SumoFiles:
    """The benchmark network and demand, from the content-hash cache (built once)."""
    return grid_scenario(default_cache_dir() / "sumo", junctions=junctions, edge_length_m=200.0, lanes=2,
                         trip_period_s=period_s, end_s=end_s, seed=SEED)


def _bare_worker(conn: Connection, files: SumoFiles, tick_s: float) -> None:
    """SUMO started with the options SumoMobility uses, minus any reading back; steps to each time it is sent and
    answers (seconds spent stepping, vehicle count)."""
    cmd = [str(sumo_home() / "bin" / "sumo"), "--no-step-log", "--no-warnings", "-n", str(files.net),
           "-r", ",".join(map(str, files.routes)), "--step-length", str(tick_s), "--seed", str(SEED),
           "--time-to-teleport", "300"]
    with contextlib.redirect_stdout(io.StringIO()):
        import libsumo
    libsumo.start(cmd)
    try:
        while (t := conn.recv()) is not None:
            began = time.perf_counter()
            libsumo.simulationStep(t)
            conn.send((time.perf_counter() - began, libsumo.vehicle.getIDCount()))
    finally:
        libsumo.close()


class _Timed:
    """The World's mobility source, timing each advance."""

    def __init__(self, mobility: SumoMobility) -> None:
        self.mobility, self.net_file, self.seconds = mobility, mobility.net_file, 0.0

    def advance(self, time_s: float) -> Snapshot:
        began = time.perf_counter()
        snap = self.mobility.advance(time_s)
        self.seconds = time.perf_counter() - began
        return snap

    def bounds(self) -> tuple[float, float, float, float]:
        return self.mobility.bounds()

    def close(self) -> None:
        self.mobility.close()


def measure(files: SumoFiles, args: argparse.Namespace) -> tuple[dict[int, np.ndarray], float, list[HandoverEvent]]:
    """Per size: median seconds per tick of bare SUMO, of SumoMobility.advance, of the large-scale channel (path
    loss and shadowing of every link), of the rest of World.refresh, and the median vehicle count, over that size's
    window; the simulated time the largest size was first reached; the handover events."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=_bare_worker, args=(child, files, args.tick))
    worker.start()
    mobility = SumoMobility(files, step_length_s=args.tick, seed=SEED)
    rows, cols, radius_m = rsu_grid(mobility.bounds(), args.rsus)
    rsus = grid_layout(mobility.bounds(), rows=rows, cols=cols, radius_m=radius_m, height_m=10.0, bandwidth_hz=10e6)
    sim = parse_scenario({"simulation": {"mobility_tick_s": args.tick},
                          "channel": {"fading": "rayleigh" if args.fading != "none" else "none",
                                      "fading_correlation": "jakes" if args.fading == "jakes" else "block"},
                          "rsu": {"hysteresis_db": 3.0, "time_to_trigger_s": 2.0}})
    env = simpy.Environment()
    events: list[HandoverEvent] = []
    timed = _Timed(mobility)
    world = World(env, sim, timed, rsus, events.extend)
    channel = world.large_scale.update
    channel_s = [0.0]

    def timed_channel(*a: object) -> tuple[np.ndarray, np.ndarray]:
        began = time.perf_counter()
        try:
            return channel(*a)
        finally:
            channel_s[0] = time.perf_counter() - began

    world.large_scale.update = timed_channel  # type: ignore[method-assign]
    windows: dict[int, list[tuple[float, float, float, float, int]]] = {}
    reached_s = 0.0
    try:
        for k in range(1, int(args.max_sim_s / args.tick)):
            t = k * args.tick
            parent.send(t)
            bare_s, count = parent.recv()
            env.run(until=t)
            began = time.perf_counter()
            world.refresh()
            full = time.perf_counter() - began
            row = (bare_s, timed.seconds, channel_s[0], full - timed.seconds - channel_s[0], count)
            for size in args.sizes:
                if count >= size or size in windows:
                    windows.setdefault(size, []).append(row)
            if count >= max(args.sizes) and not reached_s:
                reached_s = t
            if all(len(windows.get(size, [])) >= args.window for size in args.sizes):
                break
        else:
            raise SystemExit(f"the demand never reached {max(args.sizes)} vehicles in {args.max_sim_s} s; lower "
                             "--period or raise --junctions")
    finally:
        parent.send(None)
        worker.join()
        mobility.close()
    return {size: np.median(np.asarray(r[:args.window]), axis=0) for size, r in windows.items()}, reached_s, events


def warm_start(files: SumoFiles, tick_s: float, until_s: float) -> tuple[float, float]:
    """Seconds to reach until_s by simulating from 0 s, and by loading the state saved there."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.sbx"
        began = time.perf_counter()
        with SumoMobility(files, step_length_s=tick_s, seed=SEED) as cold:
            cold.advance(until_s)
            simulated = time.perf_counter() - began
            cold.save_state(state)
        began = time.perf_counter()
        with SumoMobility(files, step_length_s=tick_s, seed=SEED, load_state=state) as warm:
            warm.advance(until_s)
            loaded = time.perf_counter() - began
    return simulated, loaded


def rsu_grid(bounds: tuple[float, float, float, float], count: int) -> tuple[int, int, float]:
    """Rows, columns and coverage radius of the benchmark's RSU grid: discs of 0.75 cell overlap at the edges."""
    rows, cols = grid_shape(count)
    cell = max((bounds[2] - bounds[0]) / cols, (bounds[3] - bounds[1]) / rows)
    return rows, cols, 0.75 * cell


def peak_memory_gb(files: SumoFiles, args: argparse.Namespace, start_s: float,
                   duration_s: float) -> tuple[float, float, tuple[int, int, int]]:
    """Peak resident memory of `cosim run` (a fresh process, its SUMO in-process) over this city from start_s for
    duration_s, warm-started, with the tiny test model and 10 random participants a round; the simulated seconds its
    rounds spanned; the fewest, median and most vehicles in its vehicle samples. Local training is made too slow to
    finish (no update arrives, nothing is trained), so that every round lasts its whole 60 s deadline instead of
    ending when its uploads are in."""
    radius_m = rsu_grid(net_bounds(files.net), args.rsus)[2]
    rounds = max(1, round(duration_s / 60.0))
    fading = "none" if args.fading == "none" else "rayleigh"
    correlation = "jakes" if args.fading == "jakes" else "block"
    text = f"""name = "memory"
seed = {SEED}
[simulation]
rounds = {rounds}
round_deadline_s = {duration_s / rounds}
mobility_tick_s = {args.tick}
start_s = {start_s}
[mobility]
step_length_s = {args.tick}
network = {{ junctions = {args.junctions}, edge_length_m = 200.0, lanes = 2 }}
demand = {{ trip_period_s = {args.period}, end_s = {args.max_sim_s} }}
[rsu]
count = {args.rsus}
radius_m = {radius_m}
[channel]
fading = "{fading}"
fading_correlation = "{correlation}"
[energy]
cycles_per_sample = 1e15
[learning]
model = "tiny-bert"
clients = 8
samples_per_client = 16
max_length = 24
lora_rank = 2
batch_size = 8
local_steps = 1
eval_every = {rounds}
eval_samples = 64
[scheduler]
name = "random"
participants = 10
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.toml"
        path.write_text(text)
        child = subprocess.Popen([sys.executable, "-m", "cosim.cli", "run", str(path), "--quiet", "--out",
                                  str(Path(tmp) / "run")], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"the memory run failed (exit {os.waitstatus_to_exitcode(status)}):\n{text}")
        simulated_s = read_table(Path(tmp) / "run", "rounds")["end_s"].max() - start_s
        counts = pd.read_parquet(Path(tmp) / "run" / "vehicles.parquet", columns=["time_s"]).groupby("time_s").size()
    vehicles = (int(counts.min()), int(counts.median()), int(counts.max()))
    return usage.ru_maxrss / 1e6, simulated_s, vehicles  # Linux: ru_maxrss in kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000], help="vehicle counts to time")
    parser.add_argument("--rsus", type=int, default=81, help="RSUs on a grid over the network (default 81)")
    parser.add_argument("--fading", choices=("jakes", "block", "none"), default="jakes")
    parser.add_argument("--junctions", type=int, default=30, help="grid junctions per side (default 30)")
    parser.add_argument("--period", type=float, default=0.02, help="seconds between trips (default 0.02)")
    parser.add_argument("--tick", type=float, default=1.0, help="mobility tick = SUMO step (default 1 s)")
    parser.add_argument("--window", type=int, default=20, help="ticks timed per size (default 20)")
    parser.add_argument("--max-sim-s", type=float, default=900.0,
                        help="demand ends here (default 900 s; the memory runs' end is raised to fit)")
    parser.add_argument("--trace-rounds", type=int, default=500, help="rounds of the trace-writing run (0: skip)")
    parser.add_argument("--memory-s", type=float, nargs="*", default=[1800.0],
                        help="simulated seconds of each memory run (none: skip)")
    args = parser.parse_args()
    began = time.perf_counter()
    files = scenario(args.junctions, args.period, args.max_sim_s)
    print(f"scenario: {args.junctions}x{args.junctions} grid, trips every {args.period} s; tick {args.tick} s, "
          f"{args.rsus} RSUs, fading {args.fading}, {args.window}-tick windows")
    medians, reached_s, events = measure(files, args)
    print(f"{'vehicles':>8} {'SUMO alone':>11} {'advance':>9} {'channel':>9} {'rest':>9} {'full layer':>11} "
          f"{'ratio':>6}")
    for size in args.sizes:
        bare, advance, channel, rest, count = medians[size]
        full = advance + channel + rest
        print(f"{int(count):>8} {bare * 1e3:>8.1f} ms {advance * 1e3:>6.1f} ms {channel * 1e3:>6.1f} ms "
              f"{rest * 1e3:>6.1f} ms {full * 1e3:>8.1f} ms {full / bare:>5.2f}x")
    handovers = sum(e.from_rsu >= 0 and e.to_rsu >= 0 for e in events)
    print(f"handovers {handovers}, returning within 10 s: {ping_pong_fraction(events):.1%} (layer-3 filter "
          f"fc{RsuConfig().l3_filter_k})")
    simulated, loaded = warm_start(files, args.tick, reached_s)
    print(f"warm start at {reached_s:.0f} s ({max(args.sizes)} vehicles): re-simulating {simulated:.1f} s, loading "
          f"the saved state {loaded:.2f} s ({simulated / loaded:.0f}x faster)")
    if args.trace_rounds:
        print(trace_benchmark.report(trace_benchmark.measure(args.trace_rounds)))
    if args.memory_s:
        args.max_sim_s = max(args.max_sim_s, reached_s + max(args.memory_s) + 60.0)
        files = scenario(args.junctions, args.period, args.max_sim_s)
        peaks = []
        for duration in args.memory_s:
            gb, simulated_s, (fewest, median, most) = peak_memory_gb(files, args, reached_s, duration)
            peaks.append(gb)
            print(f"peak resident memory of cosim run (tiny model, fresh process) over {simulated_s:.0f} simulated s "
                  f"from {reached_s:.0f} s, {fewest}-{most} vehicles (median {median}): {gb:.2f} GB", flush=True)
        if len(peaks) > 1:
            slope, intercept = np.polyfit(args.memory_s, peaks, 1)
            print(f"  growth {slope * 3600.0:+.2f} GB per simulated hour; at 1800 s about "
                  f"{max(max(peaks), intercept + slope * 1800.0):.2f} GB (linear, never below the largest measured)")
    print(f"total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
