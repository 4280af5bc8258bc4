"""A SUMO scenario as its authors ship it: a .sumocfg with flows, types in an additional file, begin time, step
length, extra SUMO options, vehicle-class filter, and a warm start from SUMO's saved state."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mobility.config import MobilityConfig, open_mobility, problems
from mobility.errors import MobilityError
from mobility.netgen import generated_network
from mobility.sumocfg import option_problems, read_sumo_config

TYPES = """<additional>
    <vType id="car" vClass="passenger" maxSpeed="13.9"/>
    <vType id="citybus" vClass="bus" length="12"/>
</additional>
"""
DEMAND = """<routes>
    <flow id="cars" type="car" begin="1000" end="1300" period="3" from="A0B0" to="C2B2"/>
    <flow id="buses" type="citybus" begin="1000" end="1300" period="20" from="A0A1" to="C2C1"/>
    <route id="broken" edges="A0B0 C2B2"/>
    <vehicle id="lost" type="car" depart="1010" route="broken"/>
</routes>
"""
CONFIG = """<configuration>
    <input>
        <net-file value="city.net.xml"/>
        <route-files value="demand.rou.xml"/>
        <additional-files value="types.add.xml"/>
    </input>
    <time>
        <begin value="1000"/>
        <end value="2000"/>
        <step-length value="0.5"/>
    </time>
</configuration>
"""
WINDOW = (1060.0, 1100.0)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """A 3×3 grid shipped with a .sumocfg: car and bus flows from 1000 s, types in an additional file, and one trip
    whose route is disconnected (SUMO aborts on it unless --ignore-route-errors)."""
    folder = tmp_path_factory.mktemp("shipped")
    net = generated_network(tmp_path_factory.mktemp("cache"), "grid", lanes=1, seed=1, junctions=3,
                            edge_length_m=150.0)
    shutil.copy(net, folder / "city.net.xml")
    for name, text in (("types.add.xml", TYPES), ("demand.rou.xml", DEMAND), ("city.sumocfg", CONFIG)):
        (folder / name).write_text(text)
    return folder / "city.sumocfg"


def test_the_config_names_files_times_and_step_length(shipped):
    cfg = read_sumo_config(shipped)
    assert cfg.files.net == shipped.parent / "city.net.xml"
    assert cfg.files.routes == (shipped.parent / "demand.rou.xml",)
    assert cfg.files.additional == (shipped.parent / "types.add.xml",)
    assert (cfg.begin_s, cfg.end_s, cfg.step_length_s) == (1000.0, 2000.0, 0.5)


def test_shipped_scenario_runs_from_its_begin_with_the_option_its_unroutable_trip_needs(shipped, tmp_path):
    config = MobilityConfig(sumo_config=shipped, sumo_options=["--ignore-route-errors"])
    with open_mobility(config, tmp_path, seed=1, window_s=WINDOW) as mobility:
        first = mobility.advance(WINDOW[0])
        half = mobility.advance(WINDOW[0] + 0.5)  # the config's 0.5 s step
    assert first.time_s == WINDOW[0] and half.time_s == WINDOW[0] + 0.5
    assert any(v.startswith("cars.") for v in first.ids) and any(v.startswith("buses.") for v in first.ids)
    with (pytest.raises(MobilityError, match="No connection between edge 'A0B0' and edge 'C2B2'"),
          open_mobility(MobilityConfig(sumo_config=shipped), tmp_path, seed=1) as mobility):
        mobility.advance(1020.0)


def test_vehicle_classes_keep_only_the_clients(shipped, tmp_path):
    config = MobilityConfig(sumo_config=shipped, sumo_options=["--ignore-route-errors"],
                            vehicle_classes=["passenger"])
    with open_mobility(config, tmp_path, seed=1, window_s=WINDOW) as mobility:
        ids = np.concatenate([mobility.advance(t).ids for t in (1060.0, 1080.0, 1100.0)])
    assert len(ids) and all(v.startswith("cars.") or v == "lost" for v in ids)


def test_warm_start_is_saved_once_and_replays_the_same_drive(shipped, tmp_path):
    config = MobilityConfig(sumo_config=shipped, sumo_options=["--ignore-route-errors"])

    def drive(warm: bool) -> list:
        with open_mobility(config.model_copy(update={"warm_start": warm}), tmp_path, seed=1,
                           window_s=WINDOW) as mobility:
            return [mobility.advance(t) for t in (1060.0, 1075.0, 1090.0)]

    cold, warm, again = drive(False), drive(True), drive(True)
    assert len(list(tmp_path.glob("sumo/*/state.sbx"))) == 1
    for a, b, c in zip(cold, warm, again, strict=True):
        np.testing.assert_array_equal(b.ids, c.ids)
        np.testing.assert_array_equal(b.xy_m, c.xy_m)  # every warm run starts from the same saved state
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.xy_m, b.xy_m, atol=1e-4)  # the state is saved with 6 decimals


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"sumo_options": ["--seed", "4"]}, "--seed is set by the project; use seed instead"),
        ({"sumo_options": ["--step-length=0.1"]}, "use mobility.step_length_s instead"),
        ({"sumo_options": ["ignore-route-errors"]}, "must be an option such as"),
        ({"sumo_config": "x.sumocfg"}, "file not found"),
    ],
)
def test_options_the_project_controls_are_refused_at_validation(table, match):
    with pytest.raises(ValidationError, match=match):
        MobilityConfig(**table)


def test_network_or_demand_beside_a_config_is_refused(shipped):
    with pytest.raises(ValidationError, match="sumo_config names the network and the demand"):
        MobilityConfig(sumo_config=shipped, demand={"trip_period_s": 2.0})


def test_unknown_options_and_synonyms_of_controlled_ones_are_named():
    assert option_problems(["--ignore-route-errors", "--collision.action", "warn"]) == []
    assert option_problems(["--ignore-route-error"]) == [
        "mobility.sumo_options: SUMO has no option --ignore-route-error; did you mean --ignore-route-errors?"]
    assert option_problems(["-n", "x.net.xml"]) == [
        "mobility.sumo_options: -n is set by the project; use mobility.network instead"]


def test_a_window_past_the_configs_end_is_a_problem(shipped, tmp_path):
    found = problems(MobilityConfig(sumo_config=shipped), window_s=(1060.0, 2500.0), cache_dir=tmp_path, seed=1)
    assert found == ["mobility.sumo_config: its <end value=2000> stops SUMO before the run's end at 2500 s; lower "
                     "simulation.rounds or raise <end> in city.sumocfg"]
