"""The seed-002 benchmark's methods are the scenarios they claim to be, and its paired verdicts."""

import math
from dataclasses import replace

import pytest

from benchmarks.seed002 import METHODS, STATIC, Result, method_overrides, paired
from cosim.scenario import load_scenario

RUN = Result(upload_mb=10.0, participants=10.0, air_time_s=0.1, completed=1.0, density=1.0, accuracy=0.8,
             accuracy_se=0.01, wall_s=1.0)


def test_every_method_is_a_valid_scenario_with_its_scheduler_and_compression():
    expected = {"ideal": ("all-in", 1.0, "norm"), "dense-limited": ("gs", 1.0, "norm"),
                "top-k": ("gs", 0.3, "norm"), "random-k": ("gs", 0.3, "random"), "tsfa": ("tsfa", 1.0, "norm")}
    for method in METHODS:
        scenario = load_scenario(STATIC, method_overrides(method, 0.2, 0.3))
        compression = scenario.learning.compression
        assert (scenario.scheduler.name, compression.density, compression.selection) == expected[method]
        assert (compression.preset == "covariance") == (method == "tsfa")
        if method not in ("ideal", "tsfa"):
            assert scenario.scheduler.tau_bar_s == 0.2


def test_reduction_and_gap_are_paired_within_seeds():
    runs = {"ideal": [replace(RUN, upload_mb=u, accuracy=a) for u, a in ((10, 0.80), (20, 0.70), (30, 0.75))],
            "tsfa": [replace(RUN, upload_mb=u, accuracy=a) for u, a in ((4, 0.79), (8, 0.68), (12, 0.75))]}
    reduction, reduction_se, gap, gap_se = paired(runs, "tsfa")
    assert reduction == pytest.approx(0.6) and reduction_se == pytest.approx(0.0, abs=1e-12)
    assert gap == pytest.approx(-0.01) and gap_se == pytest.approx(0.01 / math.sqrt(3))
    one = paired({name: values[:1] for name, values in runs.items()}, "tsfa")
    assert one[2:] == pytest.approx((-0.01, math.hypot(0.01, 0.01)))
