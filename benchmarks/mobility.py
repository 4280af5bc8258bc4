"""What the mobility layer costs on top of SUMO at city scale, and what a warm start from SUMO's saved state saves.

The same deterministic SUMO simulation (a grid of 200 m blocks, 2 lanes, random trips every --period s) runs twice,
in two PipelinedSumo worker processes, over the same ticks: by blocks of --block ticks, one is
  * SUMO alone: bare simulationStep, nothing subscribed or read back, this process idle;
then the other runs the same ticks as
  * the full layer as a run drives it: SUMO in its worker reads every vehicle's position, speed and heading, then
    steps on to the next tick, while here World.refresh runs the radio world of a run: the links in coverage, their
    path loss and shadowing, layer-3 filtered association with hysteresis and time-to-trigger, fast fading of the
    serving and candidate links, dwell times, batteries;
and the next block they swap roles, so that a pair of blocks cancels what differs between the two processes.
For each size the window is the --window pairs of blocks after the vehicle count first reaches it; medians of the
pairs' seconds per tick, the ratio full layer / SUMO alone in wall time (what a run waits) and in CPU time (what it
burns: the workers' and this process's). Then the warm start: reaching the window's start by re-simulating from 0 s
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
import os
import subprocess
import sys
import tempfile
import time
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
from mobility.netgen import SumoFiles, default_cache_dir, grid_scenario
from mobility.pipelined import PipelinedSumo
from mobility.rsu import grid_layout, net_bounds
from mobility.snapshot import Snapshot
from mobility.sumo import SumoMobility

SEED = 1


def scenario(junctions: int, period_s: float, end_s: float) -> SumoFiles:
    """The benchmark network and demand, from the content-hash cache (built once)."""
    return grid_scenario(default_cache_dir() / "sumo", junctions=junctions, edge_length_m=200.0, lanes=2,
                         trip_period_s=period_s, end_s=end_s, seed=SEED)


class _Timed:
    """The World's mobility source: times each advance (the wait for SUMO's snapshot) and looks ahead only while
    `look_ahead` is set, so that a block of ticks ends with SUMO idle."""

    def __init__(self, mobility: PipelinedSumo) -> None:
        self.mobility, self.net_file, self.seconds, self.look_ahead = mobility, mobility.net_file, 0.0, True
        self.count = 0

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        began = time.perf_counter()
        snap = self.mobility.advance(time_s, next_s if self.look_ahead else None)
        self.seconds, self.count = time.perf_counter() - began, snap.count
        return snap

    def bounds(self) -> tuple[float, float, float, float]:
        return self.mobility.bounds()

    def close(self) -> None:
        self.mobility.close()


def measure(files: SumoFiles, args: argparse.Namespace) -> tuple[dict[int, np.ndarray], float, list[HandoverEvent]]:
    """Per size, one row per pair of blocks of that size's window: seconds per tick of SUMO alone, and of the full
    layer in steady state (SUMO one tick ahead in its worker), with its parts (waiting for SUMO's snapshot, the
    large-scale channel, the rest of World.refresh); CPU seconds per tick of the full layer (workers and this
    process); the vehicle count; the pair's ratios full / SUMO alone in wall and in CPU time. Also the simulated
    time the largest size was first reached, and the handover events.

    Two identical SUMO simulations run in two PipelinedSumo workers. In each block of --block ticks one steps alone
    (nothing read back, this process idle), then the other runs the same ticks as the full layer; the next block
    they swap roles. SUMO's step time differs by several per cent from one process to another (even from the same
    saved state), so a block's ratio carries that difference one way and the next block's the other way: a pair's
    ratio is the geometric mean of its two blocks', in which it cancels. A full block's first tick starts with SUMO
    idle (it did not look ahead past the previous block), so it is left out on both sides: the others are timed end
    of refresh to end of refresh, as ticks follow each other in a run."""
    sides = [PipelinedSumo(files, step_length_s=args.tick, seed=SEED) for _ in range(2)]
    workers = [psutil.Process(side.pid) for side in sides]
    bounds = sides[0].bounds()
    rows, cols, radius_m = rsu_grid(bounds, args.rsus)
    rsus = grid_layout(bounds, rows=rows, cols=cols, radius_m=radius_m, height_m=10.0, bandwidth_hz=10e6)
    sim = parse_scenario({"simulation": {"mobility_tick_s": args.tick},
                          "channel": {"fading": "rayleigh" if args.fading != "none" else "none",
                                      "fading_correlation": "jakes" if args.fading == "jakes" else "block"},
                          "rsu": {"hysteresis_db": 3.0, "time_to_trigger_s": 2.0}})
    env = simpy.Environment()
    events: list[HandoverEvent] = []
    timed = _Timed(sides[0])
    world = World(env, sim, timed, rsus, events.extend)
    channel = world.large_scale.update
    channel_s = [0.0]

    def timed_channel(*a: object) -> tuple[np.ndarray, np.ndarray]:
        began = time.perf_counter()
        try:
            return channel(*a)
        finally:
            channel_s[0] = time.perf_counter() - began

    def cpu_s() -> float:
        return time.process_time() + sum(sum(worker.cpu_times()[:2]) for worker in workers)

    world.large_scale.update = timed_channel  # type: ignore[method-assign]
    blocks: list[np.ndarray] = []  # SUMO alone and full layer per tick, wall and CPU; full's parts; vehicles
    firsts: dict[int, int] = {}  # size -> the first block that reached it
    ticks = [k * args.tick for k in range(1, int(args.max_sim_s / args.tick))]
    try:
        for k, first in enumerate(range(0, len(ticks) - args.block + 1, args.block)):
            alone, timed.mobility = sides[k % 2], sides[1 - k % 2]
            block, ends, cpu_began = ticks[first:first + args.block], [time.perf_counter()], cpu_s()
            for t in block:
                alone.step(t)
                ends.append(time.perf_counter())
            alone_s, alone_cpu = np.diff(ends)[1:].mean(), (cpu_s() - cpu_began) / len(block)
            ends, parts, cpu_began = [], [], cpu_s()
            for i, t in enumerate(block):
                timed.look_ahead = i < len(block) - 1
                env.run(until=t)
                world.refresh()
                ends.append(time.perf_counter())
                parts.append((timed.seconds, channel_s[0], timed.count))
            wall, (waiting, channel_only, _), count = np.diff(ends), np.array(parts[1:]).T, parts[0][2]
            blocks.append(np.array([alone_s, alone_cpu, wall.mean(), waiting.mean(), channel_only.mean(),
                                    (wall - waiting - channel_only).mean(), (cpu_s() - cpu_began) / len(block),
                                    count]))
            for size in args.sizes:
                if count >= size:
                    firsts.setdefault(size, k)
            if len(firsts) == len(args.sizes) and k + 1 - max(firsts.values()) >= 2 * args.window:
                break
        else:
            raise SystemExit(f"the demand never reached {max(args.sizes)} vehicles in {args.max_sim_s} s; lower "
                             "--period or raise --junctions")
    finally:
        for side in sides:
            side.close()
    windows = {}
    for size, k in firsts.items():
        pairs = np.array(blocks[k:k + 2 * args.window]).reshape(args.window, 2, -1)
        alone_s, alone_cpu, full = pairs[:, :, 0], pairs[:, :, 1], pairs[:, :, 2:]
        ratios = [
            np.sqrt(np.prod(full[:, :, 0] / alone_s, axis=1)),
            np.sqrt(np.prod(full[:, :, 4] / alone_cpu, axis=1)),
        ]
        windows[size] = np.column_stack([alone_s.mean(axis=1), full.mean(axis=1), *ratios])
    return windows, ticks[firsts[max(args.sizes)] * args.block], events


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
    parser.add_argument("--window", type=int, default=8, help="pairs of blocks timed per size (default 8)")
    parser.add_argument("--max-sim-s", type=float, default=900.0,
                        help="demand ends here (default 900 s; the memory runs' end is raised to fit)")
    parser.add_argument("--trace-rounds", type=int, default=500, help="rounds of the trace-writing run (0: skip)")
    parser.add_argument("--memory-s", type=float, nargs="*", default=[1800.0],
                        help="simulated seconds of each memory run (none: skip)")
    args = parser.parse_args()
    began = time.perf_counter()
    files = scenario(args.junctions, args.period, args.max_sim_s)
    print(f"scenario: {args.junctions}x{args.junctions} grid, trips every {args.period} s; tick {args.tick} s, "
          f"{args.rsus} RSUs, fading {args.fading}, windows of {args.window} pairs of blocks of {args.block} ticks")
    blocks, reached_s, events = measure(files, args)
    print("per tick, wall: SUMO alone; the full layer (SUMO one tick ahead in its worker, then this process) and its "
          "parts: waiting for SUMO's snapshot, channel, rest of the World; CPU: the SUMO workers and this process")
    print("medians over the window's pairs of blocks; ratios: median of the pairs' own (lowest-highest pair)")
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
