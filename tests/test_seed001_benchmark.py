"""The seed-001 benchmark's verdicts: paired gaps over seeds, the ordering check, and the resumable result log."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import seed001
from benchmarks.seed001 import PAIRS, Result, ResultLog, ordering, paired_gaps

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


def test_result_log_runs_each_key_once_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(path: Path, overrides: list[str]) -> Result:
        calls.append(overrides)
        return replace(RUN, accuracy=0.5 + len(calls) / 100)

    monkeypatch.setattr(seed001, "run_one", fake_run)
    path, scenario = tmp_path / "results.jsonl", Path("seed001-static.toml")
    log = ResultLog(path)
    first = log.run(scenario, ["seed=1"])
    assert log.run(scenario, ["seed=1"]) == first and len(calls) == 1
    second = log.run(scenario, ["seed=2"])
    with path.open("a") as file:
        file.write('{"key": "[\\"seed001-static.toml\\", [\\"seed=3\\"]]", "resu')  # killed mid-write

    resumed = ResultLog(path)
    assert resumed.run(scenario, ["seed=1"]) == first and resumed.run(scenario, ["seed=2"]) == second
    assert len(calls) == 2
    resumed.run(scenario, ["seed=3"])  # the torn line does not count as done
    assert calls[-1] == ["seed=3"]
