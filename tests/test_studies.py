"""Studies end to end on tiny-BERT: a sweep of two schedulers (a built-in and the user's own, from examples/) × two
seeds on a process pool and on a local two-CPU Ray, resumed after a kill, reported in headless Chromium, and opened
in the notebooks."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from nbclient import NotebookClient

from cosim import plots
from cosim.cli import main
from cosim.report import load, paired_gap, write_report
from cosim.scenario import ScenarioError, load_scenario
from cosim.sweep import CATALOGUE, load_study, read_catalogue, run_study
from cosim.trace import read_run

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "tests" / "data" / "study.toml"
TINY = ROOT / "tests" / "data" / "tiny.toml"
DWELL = "examples.dwell_aware:DwellAware"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.chdir(ROOT)  # the user's scheduler is importable from the repository root
    out = tmp_path_factory.mktemp("study") / "pool"
    assert main(["sweep", str(STUDY), "--out", str(out), "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_catalogue_has_every_point_and_round(study_dir):
    catalogue, info = read_catalogue(study_dir)
    assert info["parameters"] == ["scheduler", "seed"] and info["schedulers"] == ["all-in", DWELL]
    assert len(catalogue) == 2 * 2 * 3 and (catalogue["status"] == "complete").all()
    assert all(rounds.tolist() == [0, 1, 2] for _, rounds in catalogue.groupby(["scheduler", "seed"])["round"])
    assert catalogue["run"].nunique() == 4
    dwell = catalogue[catalogue["scheduler"] == DWELL]
    assert (dwell["participants"] <= 4).all() and (dwell["participants"] > 0).any()  # its own config applied
    assert (catalogue[catalogue["scheduler"] == "all-in"]["participants"] > 4).all()


def test_seeds_pair_the_schedulers(study_dir):
    """Within a seed both schedulers drive the same vehicles through the same cells; seeds differ."""
    catalogue, _ = read_catalogue(study_dir)
    runs = catalogue.drop_duplicates("run").set_index(["scheduler", "seed"])["run"]
    tracks = {key: read_run(study_dir / "runs" / run)["vehicles"][["time_s", "vehicle", "x_m", "y_m", "rsu"]]
              for key, run in runs.items()}
    common = min(t["time_s"].max() for t in tracks.values())
    at = {key: t[t["time_s"] <= common].reset_index(drop=True) for key, t in tracks.items()}
    for seed in (1, 2):
        pd.testing.assert_frame_equal(at["all-in", seed], at[DWELL, seed])
    assert not at["all-in", 1].equals(at["all-in", 2])


def test_ray_gives_the_same_catalogue(study_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["sweep", str(STUDY), "--out", str(tmp_path / "ray"), "--ray", "auto", "--workers", "2"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray" / CATALOGUE),
                                  pd.read_parquet(study_dir / CATALOGUE), check_exact=True)


def test_a_killed_study_resumes_with_the_missing_runs_only(study_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    resumed = tmp_path / "resumed"
    shutil.copytree(study_dir, resumed)
    keys = sorted(path.name for path in (resumed / "runs").iterdir())
    killed = resumed / "runs" / keys[0] / "manifest.json"  # killed mid-run: its manifest still says running
    killed.write_text(json.dumps({**json.loads(killed.read_text()), "status": "running"}))
    shutil.rmtree(resumed / "runs" / keys[1])  # never started
    untouched = {key: (resumed / "runs" / key / "rounds.parquet").stat().st_mtime_ns for key in keys[2:]}

    finished = []
    outcome = run_study(load_study(STUDY), resumed, workers=1, on_finish=lambda point, error: finished.append(
        (point.key, error)))
    assert sorted(finished) == [(keys[0], None), (keys[1], None)]
    assert (outcome.run, outcome.skipped, outcome.failed) == (2, 2, 0)
    assert {key: (resumed / "runs" / key / "rounds.parquet").stat().st_mtime_ns for key in keys[2:]} == untouched
    pd.testing.assert_frame_equal(pd.read_parquet(resumed / CATALOGUE), pd.read_parquet(study_dir / CATALOGUE),
                                  check_exact=True)


def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "boom.py").write_text(
        "from cosim.schedulers import SchedulerConfig\n\n"
        "class Boom:\n    Config = SchedulerConfig\n\n"
        "    def __init__(self, config, rng):\n        raise RuntimeError('boom at start')\n\n"
        "    def plan(self, obs): ...\n\n    def observe(self, feedback): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    study = tmp_path / "study.toml"
    study.write_text(f'scenario = "{TINY}"\nset = ["simulation.rounds=1"]\n'
                     'schedulers = [{ name = "boom:Boom" }, { name = "all-in" }]\n')
    assert main(["sweep", str(study), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    catalogue, _ = read_catalogue(tmp_path / "out")
    failed = catalogue[catalogue["scheduler"] == "boom:Boom"]
    assert len(failed) == 1 and failed["status"].item() == "failed"
    assert failed["error"].item() == "RuntimeError: boom at start"
    assert (catalogue[catalogue["scheduler"] == "all-in"]["status"] == "complete").all()


@pytest.mark.parametrize(("text", "problem"), [
    ('schedulers = [{ name = "all-in" }]\nseeds = []', "seeds: List should have at least 1 item"),
    ('grid = { "seed" = [1, 2] }', "'seed' is varied by the study's `seeds`"),
    ('zip = { "rsu.count" = [1, 2], "rsu.radius_m" = [100.0] }', "zip: every field needs the same number"),
    ('grid = { "rsu.count" = [0] }', "rsu.count: must be >= 1, got 0"),
    ('schedulers = [{ name = "examples.dwell_aware:DwellAware", margin = 0.5 }]',
     "scheduler.margin: must be >= 1.0, got 0.5"),
    ("sedes = [1]", "sedes: Extra inputs are not permitted"),
])
def test_bad_studies_fail_before_any_run_with_one_line(tmp_path, monkeypatch, capsys, text, problem):
    monkeypatch.chdir(ROOT)
    study = tmp_path / "bad.toml"
    study.write_text(f'scenario = "{TINY}"\n{text}\n')
    assert main(["sweep", str(study), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and problem in err
    assert not (tmp_path / "never").exists()


def test_all_in_ignores_a_varied_delay_budget_and_runs_once_per_seed(tmp_path):
    study = tmp_path / "tau.toml"
    study.write_text(f'scenario = "{TINY}"\nseeds = [1, 2]\nschedulers = [{{ name = "all-in" }}, {{ name = "gs" }}]\n'
                     '[grid]\n"scheduler.tau_bar_s" = [0.5, 1.0]\n')
    points = load_study(study).points
    assert len(points) == 8 and len({p.key for p in points}) == 2 + 4
    gs = [p for p in points if p.parameters["scheduler"] == "gs"]
    assert sorted({p.scenario.scheduler.tau_bar_s for p in gs}) == [0.5, 1.0]


def test_user_scheduler_from_module_and_entry_point(monkeypatch):
    monkeypatch.chdir(ROOT)
    scenario = load_scenario(TINY, [f"scheduler.name={DWELL}", "scheduler.participants=3"])
    assert scenario.scheduler.participants == 3 and scenario.scheduler.margin == 2.0

    class EntryPoint:
        def load(self):
            from examples.dwell_aware import DwellAware
            return DwellAware

    monkeypatch.setattr("cosim.schedulers.base.metadata.entry_points",
                        lambda group, name: [EntryPoint()] if (group, name) == ("cosim.schedulers", "dwell") else [])
    assert load_scenario(TINY, ["scheduler.name=dwell", "scheduler.margin=3"]).scheduler.margin == 3.0
    with pytest.raises(ScenarioError, match=r"scheduler.name: cannot import 'nowhere' .*PYTHONPATH"):
        load_scenario(TINY, ["scheduler.name=nowhere:Thing"])
    with pytest.raises(ScenarioError, match=r"module 'examples.dwell_aware' has no 'Nope'"):
        load_scenario(TINY, ["scheduler.name=examples.dwell_aware:Nope"])
    with pytest.raises(ScenarioError, match=r"has no `Config` attribute"):
        load_scenario(TINY, ["scheduler.name=examples.dwell_aware:DwellAwareConfig"])


def test_paired_gap() -> None:
    gaps = np.array([0.01, 0.03])
    assert paired_gap(gaps, 0.5) == pytest.approx((0.02, 2 * gaps.std(ddof=1) / np.sqrt(2)))
    assert paired_gap(np.array([0.04]), 0.01) == pytest.approx((0.04, 0.02))


def test_map_draws_roads_rsus_and_tracks(study_dir):
    catalogue, _ = read_catalogue(study_dir)
    run = read_run(study_dir / "runs" / catalogue["run"].iloc[0])
    assert Path(run["manifest"]["net_file"]).is_file()
    ax = Figure().subplots()
    plots.rsu_map(run, ax)
    circles = [patch for patch in ax.patches if isinstance(patch, Circle)]
    rsus = run["manifest"]["rsus"]
    assert [tuple(c.center) for c in circles] == [tuple(xy) for xy in rsus["xy_m"]]
    assert [c.radius for c in circles] == rsus["radius_m"]
    roads, tracks = ax.collections
    assert len(roads.get_paths()) == len(plots.lane_shapes(run["manifest"]["net_file"])) > 0
    assert len(tracks.get_paths()) > 0


def test_report_renders_in_headless_chromium(study_dir, tmp_path):
    page = write_report([study_dir, study_dir / "runs" / read_catalogue(study_dir)[0]["run"].iloc[0]], tmp_path)
    names = {"accuracy", "latency", "participation", "energy", "handovers", "map", "gaps"}
    assert {path.stem for path in tmp_path.glob("*.png")} == names
    text = page.read_text()
    assert text.count("data:image/png;base64,") == len(names) and "src=\"http" not in text
    groups, gaps = load([study_dir])
    assert list(groups) == ["all-in", DWELL] and all(len(runs) == 2 for runs in groups.values())
    assert gaps[["better", "worse", "seeds"]].values.tolist() == [["all-in", DWELL, 2]]

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    probe = tmp_path / "probe.html"  # the page plus a check that every image decoded
    probe.write_text(text.replace("</body>", "<script>addEventListener('load', () => console.log('decoded ' + "
                                  "[...document.images].filter(i => i.naturalWidth > 0).length + '/' + "
                                  "document.images.length))</script></body>"))
    shot = tmp_path / "screenshot.png"
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", "--window-size=1400,4000", f"--screenshot={shot}", probe.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    console = re.findall(r"CONSOLE[^\]]*\] (.*)", result.stderr)  # every console message, errors included
    assert len(console) == 1 and console[0].startswith(f'"decoded {len(names)}/{len(names)}"'), result.stderr[-2000:]
    assert shot.is_file()
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 1000 and pixels.std() > 0.05  # drawn, not blank


@pytest.mark.parametrize(("notebook", "variable"), [("compare_schedulers", "COSIM_STUDY"),
                                                    ("mobility_and_handovers", "COSIM_RUN")])
def test_notebooks_run_headless(study_dir, monkeypatch, notebook, variable):
    catalogue, _ = read_catalogue(study_dir)
    target = study_dir if variable == "COSIM_STUDY" else study_dir / "runs" / catalogue["run"].iloc[0]
    monkeypatch.setenv(variable, str(target))
    book = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs]
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 2
