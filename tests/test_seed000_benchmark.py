"""The seed-000 benchmark's paired comparison and figure, on made-up results."""

from dataclasses import replace

import pytest

from benchmarks.seed000 import SCENARIO, SCHEDULERS, Result, draw, paired, report, scheduler_table, verdict
from cosim.scenario import load_scenario

RUN = Result(latency_s=4.0, busy_s=2.0, energy_j=1.5, accuracy=0.80, completed=1.0, mean_rank=8.0, peak_rss_mb=900.0,
             peak_cuda_mb=0.0, wall_s=1.0)


def test_paired_gaps_are_within_seed(tmp_path, capsys):
    # seed-to-seed swings (±0.05 accuracy, ±1 s) far larger than the schedulers' gaps, which are constant per seed
    runs = {name: [replace(RUN, latency_s=RUN.latency_s + swing, accuracy=RUN.accuracy + swing / 20)
                   for swing in (-1.0, 0.0, 1.0)] for name in SCHEDULERS}
    runs["ucb-dual"] = [replace(r, latency_s=0.7 * r.latency_s, accuracy=r.accuracy + 0.03) for r in runs["homolora"]]
    gap = paired(runs, "homolora")
    assert gap["latency"] == pytest.approx((0.3, 0.0, 3), abs=1e-12)
    assert gap["accuracy"] == pytest.approx((3.0, 0.0, 3), abs=1e-9)
    assert gap["energy"] == (0.0, 0.0, 0)
    report(runs, [1, 2, 3])
    out = capsys.readouterr().out
    assert "vs homolora: latency −30.0%" in out
    assert "latency > 24% lower shown; accuracy > 2.5 points higher shown" in out
    draw(runs, tmp_path / "fig.png", "test")
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_several_tasks_are_reported_each(capsys):
    runs = {name: [replace(RUN, tasks=(("sst2", 0.8 + i / 100, 10.0), ("mrpc", 0.7, 20.0 + i))) for i in (0, 2)]
            for name in SCHEDULERS}
    report(runs, [1, 2])
    out = capsys.readouterr().out
    assert "  sst2     ucb-dual 0.810 ± 0.010, 10.0 ± 0.0 J" in out
    assert "  mrpc     ucb-dual 0.700 ± 0.000, 21.0 ± 1.0 J" in out


def test_one_seed_has_no_standard_error_and_separates_nothing():
    runs = {name: [RUN] for name in SCHEDULERS}
    mean, se, better = paired(runs, "hetlora")["accuracy"]
    assert mean == 0.0 and se != se and better == 0
    assert verdict(3.0, se, 2.5) == "mean above, not separated (2 SE)"
    assert verdict(3.17, 2.5, 2.5) == "mean above, not separated (2 SE)" and verdict(3.17, 0.3, 2.5) == "shown"
    assert verdict(-7.7, 0.0, 2.5) == "NOT shown"


def test_each_run_replaces_the_whole_scheduler_table():
    """The scenario's [scheduler] is UCB-DUAL's: the baselines must not inherit its keys, but share its participants
    and (HetLoRA) its ranks."""
    base = load_scenario(SCENARIO, ["scheduler.participants=6"]).scheduler
    configs = {name: load_scenario(SCENARIO, [f"scheduler={scheduler_table(base, name)}"]).scheduler
               for name in SCHEDULERS}
    assert configs["ucb-dual"] == base
    assert {config.participants for config in configs.values()} == {6}
    assert configs["hetlora"].ranks == base.ranks and configs["homolora"].rank is None
