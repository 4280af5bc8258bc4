"""The seed-001 benchmark's verdicts: paired gaps over seeds, the ordering check, and the resumable result log."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import seed001
from benchmarks.seed001 import PAIRS, Result, ordering, paired_gaps

RUN = Result(devices=10.0, late_devices=10.0, delay_s=1.0, completed=1.0, accuracy=0.7, accuracy_se=0.015,
             eval_samples=872, payload_bits=1_000_000, wall_s=1.0)


def runs_with(accuracy: dict[str, list[float]]) -> dict[str, list[Result]]:
    return {name: [replace(RUN, accuracy=a) for a in values] for name, values in accuracy.items()}


def test_paired_gaps_cancel_what_the_seeds_share() -> None:
    # Seeds differ by ±0.05 in accuracy, far more than the schedulers; within a seed Lyapunov leads GS by 0.01 ± 0.002.
    base = [0.70, 0.75, 0.65, 0.72]
    noise = [0.002, -0.002, 0.001, -0.001]
    runs = runs_with({"all-in": [b + 0.03 for b in base], "lyapunov": [b + 0.01 + e for b, e in
                                                                        zip(base, noise, strict=True)],
                      "gs": base, "aaba": [b - 0.02 for b in base]})
    gaps = paired_gaps(runs)
    diff = [0.012, 0.008, 0.011, 0.009]
    mean = sum(diff) / 4
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / 3 / 4)
    assert gaps["lyapunov", "gs"] == pytest.approx((mean, 2 * se))
    assert gaps["gs", "aaba"] == pytest.approx((0.02, 0.0), abs=1e-12)
    assert ordering(gaps) == "holds"


def test_one_seed_falls_back_to_the_held_out_error_of_the_gap() -> None:
    gaps = paired_gaps(runs_with({"all-in": [0.80], "lyapunov": [0.75], "gs": [0.74], "aaba": [0.65]}))
    assert gaps["lyapunov", "gs"] == pytest.approx((0.01, 2 * math.hypot(0.015, 0.015)))
    assert ordering(gaps) == "not separated: lyapunov ~ gs"


@pytest.mark.parametrize(("gaps", "verdict"), [
    ({"all-in": (0.0, 0.0), "lyapunov": (0.02, 0.01), "gs": (0.02, 0.01)}, "holds"),  # All-in may tie
    ({"all-in": (-0.02, 0.01), "lyapunov": (0.02, 0.01), "gs": (0.0, 0.01)},
     "FAILS: all-in < lyapunov, gs ~ aaba"),
    ({"all-in": (0.01, 0.01), "lyapunov": (0.005, 0.01), "gs": (-0.005, 0.01)},
     "not separated: lyapunov ~ gs, gs ~ aaba"),
    ({"all-in": (1.0, 0.0), "lyapunov": (1.0, 0.0), "gs": (0.0, 0.0)}, "not separated: gs ~ aaba"),  # devices tie
])
def test_ordering_verdicts(gaps: dict[str, tuple[float, float]], verdict: str) -> None:
    assert ordering({(better, worse): gaps[better] for better, worse, _ in PAIRS}) == verdict


def test_compare_runs_a_resumable_study(tmp_path: Path) -> None:
    """One τ̄, one seed, one round: every scheduler runs once, and a second call reuses the run directories."""
    base = seed001.load_scenario(seed001.STATIC)
    common = [*seed001.QUICK, "simulation.rounds=1", "learning.eval_every=1"]
    runs = seed001.compare(seed001.STATIC, [0.5], [1], common, base, tmp_path, "exact", workers=2)
    assert list(runs[0.5]) == list(seed001.SCHEDULERS) and all(len(r) == 1 for r in runs[0.5].values())
    assert runs[0.5]["all-in"][0].devices == base.mobility.disk.devices
    assert runs[0.5]["lyapunov"][0].payload_bits == runs[0.5]["gs"][0].payload_bits > 0
    manifests = sorted(tmp_path.glob("runs/*/manifest.json"))
    stamps = [path.stat().st_mtime_ns for path in manifests]
    assert seed001.compare(seed001.STATIC, [0.5], [1], common, base, tmp_path, "exact", workers=2) == runs
    assert [path.stat().st_mtime_ns for path in manifests] == stamps and len(manifests) == 4
