"""What the mobility layer costs on top of SUMO at city scale, and what a warm start from SUMO's saved state saves.

The same deterministic SUMO simulation (a grid of 200 m blocks, 2 lanes, random trips every --period s) runs twice,
over the same ticks, taking turns by blocks of --block ticks so that load from other processes hits both alike:
  * SUMO alone, in a worker process: bare simulationStep, nothing subscribed or read back;
  * the full layer as a run drives it: PipelinedSumo (SUMO in its worker reads every vehicle's position, speed and
    heading, then steps on to the next tick), and here World.refresh, the radio world of a run: the links in
    coverage, their path loss and shadowing, layer-3 filtered association with hysteresis and time-to-trigger, fast
    fading of the serving and candidate links, dwell times, batteries.
For each size the window is the --window blocks after the vehicle count first reaches it; medians of the blocks'
seconds per tick, the ratio full layer / SUMO alone in wall time (what a run waits) and in CPU time (what it
burns: the worker's and this process's). Then the warm start: reaching the window's start by re-simulating from 0 s
against loading SUMO's state saved there (what `mobility.warm_start` caches), and the ping-pong share of the run's
handovers. Then the cost of writing traces per round early and late in a 500-round run (benchmarks/trace.py), and the
peak resident memory of whole `cosim run`s of this city in fresh processes (the run's and its SUMO worker's
together): from the time the largest size is reached, for each of --memory-s simulated seconds (default 1800: 30
minutes), tiny model, 10 random participants a round; with two or more durations, the linear extrapolation to 30
minutes too.
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
import psutil
import simpy

from benchmarks import trace as trace_benchmark
from cosim.scenario import parse_scenario
from cosim.trace import read_table
from cosim.world import World
from mobility.association import HandoverEvent, ping_pong_fraction
from mobility.config import RsuConfig, grid_shape
from mobility.netgen import SumoFiles, default_cache_dir, grid_scenario, sumo_home
from mobility.pipelined import PipelinedSumo
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
    """The World's mobility source: times each advance (the wait for SUMO's snapshot) and looks ahead only while
    `look_ahead` is set, so that a block of ticks ends with SUMO idle."""

    def __init__(self, mobility: PipelinedSumo) -> None:
        self.mobility, self.net_file, self.seconds, self.look_ahead = mobility, mobility.net_file, 0.0, True

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        began = time.perf_counter()
        snap = self.mobility.advance(time_s, next_s if self.look_ahead else None)
        self.seconds = time.perf_counter() - began
        return snap

    def bounds(self) -> tuple[float, float, float, float]:
        return self.mobility.bounds()

    def close(self) -> None:
        self.mobility.close()


def measure(files: SumoFiles, args: argparse.Namespace) -> tuple[dict[int, np.ndarray], float, list[HandoverEvent]]:
    """Per size, one row per block of that size's window: seconds per tick of bare SUMO, and of the full layer in
    steady state (SUMO one tick ahead in its worker), with its parts (waiting for SUMO's snapshot, the large-scale
    channel, the rest of World.refresh); CPU seconds per tick of the full layer (worker and this process); the
    vehicle count; the block's ratios full / bare in wall and in CPU time (pairing each block with its bare twin
    cancels load that changes between blocks). Also the simulated time the largest size was first reached, and the
    handover events.

    Bare SUMO and the full layer take turns by blocks of --block ticks over the same ticks, each alone on the CPU.
    A full block's first tick starts with SUMO idle (it did not look ahead past the previous block), so it is left
    out: the others are timed end of refresh to end of refresh, as ticks follow each other in a run."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=_bare_worker, args=(child, files, args.tick))
    worker.start()
    mobility = PipelinedSumo(files, step_length_s=args.tick, seed=SEED)
    sumo_process = psutil.Process(mobility.pid)
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
    windows: dict[int, list[np.ndarray]] = {}
    reached_s = 0.0
    ticks = [k * args.tick for k in range(1, int(args.max_sim_s / args.tick))]
    try:
        for first in range(0, len(ticks) - args.block + 1, args.block):
            block = ticks[first:first + args.block]
            bare = []
            for t in block:
                parent.send(t)
                bare.append(parent.recv())
            parts, cpu_began = [], (time.process_time(), sum(sumo_process.cpu_times()[:2]))
            last = time.perf_counter()
            for i, t in enumerate(block):
                timed.look_ahead = i < len(block) - 1
                env.run(until=t)
                world.refresh()
                now = time.perf_counter()
                parts.append((now - last, timed.seconds, channel_s[0], now - last - timed.seconds - channel_s[0]))
                last = now
            cpu_s = time.process_time() - cpu_began[0] + sum(sumo_process.cpu_times()[:2]) - cpu_began[1]
            bare_s, counts = np.array(bare).T
            full_s = np.mean(parts[1:], axis=0)
            row = np.array([np.mean(bare_s), *full_s, cpu_s / len(block), counts[0], full_s[0] / np.mean(bare_s),
                            cpu_s / np.sum(bare_s)])
            for size in args.sizes:
                if counts[0] >= size or size in windows:
                    windows.setdefault(size, []).append(row)
            if counts.max() >= max(args.sizes) and not reached_s:
                reached_s = block[int(np.argmax(counts >= max(args.sizes)))]
            if all(len(windows.get(size, [])) >= args.window for size in args.sizes):
                break
        else:
            raise SystemExit(f"the demand never reached {max(args.sizes)} vehicles in {args.max_sim_s} s; lower "
                             "--period or raise --junctions")
    finally:
        parent.send(None)
        worker.join()
        mobility.close()
    return {size: np.asarray(r[:args.window]) for size, r in windows.items()}, reached_s, events


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
    """Peak resident memory of `cosim run` (a fresh process, with its SUMO worker) over this city from start_s for
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
        peak_bytes, status = _tree_peak_rss(child.pid)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"the memory run failed (exit {os.waitstatus_to_exitcode(status)}):\n{text}")
        simulated_s = read_table(Path(tmp) / "run", "rounds")["end_s"].max() - start_s
        counts = pd.read_parquet(Path(tmp) / "run" / "vehicles.parquet", columns=["time_s"]).groupby("time_s").size()
    vehicles = (int(counts.min()), int(counts.median()), int(counts.max()))
    return peak_bytes / 1e9, simulated_s, vehicles


def _tree_peak_rss(pid: int) -> tuple[int, int]:
    """Peak resident bytes of process `pid` and its descendants together (sampled every 0.2 s, and never below the
    largest single process's own peak), and its wait status once it has exited."""
    tree, peak = psutil.Process(pid), 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return max(peak, usage.ru_maxrss * 1024), status  # Linux: ru_maxrss in KiB
        with contextlib.suppress(psutil.Error):  # a process of the tree may end between listing and reading
            peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000], help="vehicle counts to time")
    parser.add_argument("--rsus", type=int, default=81, help="RSUs on a grid over the network (default 81)")
    parser.add_argument("--fading", choices=("jakes", "block", "none"), default="jakes")
    parser.add_argument("--junctions", type=int, default=30, help="grid junctions per side (default 30)")
    parser.add_argument("--period", type=float, default=0.02, help="seconds between trips (default 0.02)")
    parser.add_argument("--tick", type=float, default=1.0, help="mobility tick = SUMO step (default 1 s)")
    parser.add_argument("--block", type=int, default=4, help="ticks per turn of each side (default 4)")
    parser.add_argument("--window", type=int, default=8, help="blocks timed per size (default 8)")
    parser.add_argument("--max-sim-s", type=float, default=900.0,
                        help="demand ends here (default 900 s; the memory runs' end is raised to fit)")
    parser.add_argument("--trace-rounds", type=int, default=500, help="rounds of the trace-writing run (0: skip)")
    parser.add_argument("--memory-s", type=float, nargs="*", default=[1800.0],
                        help="simulated seconds of each memory run (none: skip)")
    args = parser.parse_args()
    began = time.perf_counter()
    files = scenario(args.junctions, args.period, args.max_sim_s)
    print(f"scenario: {args.junctions}x{args.junctions} grid, trips every {args.period} s; tick {args.tick} s, "
          f"{args.rsus} RSUs, fading {args.fading}, windows of {args.window} blocks of {args.block} ticks")
    blocks, reached_s, events = measure(files, args)
    print("per tick, wall: SUMO alone; the full layer (SUMO one tick ahead in its worker, then this process) and its "
          "parts: waiting for SUMO's snapshot, channel, rest of the World; CPU: worker and this process together")
    print("medians over the window's blocks; ratios: median of the blocks' own (lowest-highest block)")
    print(f"{'vehicles':>8} {'SUMO alone':>11} {'full layer':>11} {'waiting':>9} {'channel':>9} {'rest':>9} "
          f"{'ratio':>17} {'CPU':>9} {'CPU ratio':>17}")
    for size in args.sizes:
        bare, full, waiting, channel, rest, cpu, count, ratio, cpu_ratio = np.median(blocks[size], axis=0)
        low, high = blocks[size][:, -2:].min(axis=0), blocks[size][:, -2:].max(axis=0)
        print(f"{int(count):>8} {bare * 1e3:>8.1f} ms {full * 1e3:>8.1f} ms {waiting * 1e3:>6.1f} ms "
              f"{channel * 1e3:>6.1f} ms {rest * 1e3:>6.1f} ms {ratio:>5.2f}x ({low[0]:.2f}-{high[0]:.2f}) "
              f"{cpu * 1e3:>6.1f} ms {cpu_ratio:>5.2f}x ({low[1]:.2f}-{high[1]:.2f})")
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
