"""SUMO network/demand generation and its content-hash cache."""

import subprocess
import xml.etree.ElementTree as ET

import pytest

from mobility import netgen
from mobility.errors import MobilityError

PARAMS = {"junctions": 3, "edge_length_m": 150.0, "lanes": 1, "trip_period_s": 2.0, "end_s": 60.0, "seed": 5}


def test_grid_scenario_builds_real_files_then_serves_them_from_cache(tmp_path, monkeypatch):
    files = netgen.grid_scenario(tmp_path, **PARAMS)
    assert files.net.parent == files.routes.parent and files.net.parent.parent == tmp_path
    net = ET.parse(files.net).getroot()
    junctions = [j for j in net.iter("junction") if j.get("type") != "internal"]
    assert len(junctions) == 9
    vehicles = list(ET.parse(files.routes).getroot().iter("vehicle"))
    assert 0 < len(vehicles) <= 30  # one trip every 2 s over 60 s, some dropped by --validate
    assert all(v.find("route") is not None for v in vehicles)  # duarouter produced routes, not bare trips
    assert [p.name for p in tmp_path.iterdir()] == [files.net.parent.name]  # no temp dir left behind

    mtimes = (files.net.stat().st_mtime_ns, files.routes.stat().st_mtime_ns)

    def no_sumo(*args, **kwargs):
        raise AssertionError(f"cache hit must not run SUMO tools: {args}")

    monkeypatch.setattr(subprocess, "run", no_sumo)
    again = netgen.grid_scenario(tmp_path, **PARAMS)
    assert again == files
    assert (files.net.stat().st_mtime_ns, files.routes.stat().st_mtime_ns) == mtimes


def test_every_parameter_and_the_sumo_version_change_the_cache_key(tmp_path, monkeypatch):
    built: list[dict] = []

    def fake_build(out, params):
        built.append(params)
        (out / "grid.net.xml").write_text("<net/>")
        (out / "routes.rou.xml").write_text("<routes/>")

    monkeypatch.setattr(netgen, "_build_grid", fake_build)
    base = netgen.grid_scenario(tmp_path, **PARAMS).net.parent
    variants = [{**PARAMS, key: PARAMS[key] + 1} for key in PARAMS]
    dirs = {netgen.grid_scenario(tmp_path, **v).net.parent for v in variants}
    monkeypatch.setattr(netgen, "sumo_version", lambda: "0.0.0")
    dirs.add(netgen.grid_scenario(tmp_path, **PARAMS).net.parent)
    assert base not in dirs and len(dirs) == len(PARAMS) + 1
    assert len(built) == len(PARAMS) + 2


def test_failed_build_leaves_no_cache_entry_and_names_the_tool(tmp_path, monkeypatch):
    real_run = subprocess.run

    def failing_random_trips(cmd, **kwargs):
        if any("randomTrips" in str(c) for c in cmd):
            return subprocess.CompletedProcess(cmd, 1, "", "boom: no valid edges")
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", failing_random_trips)
    with pytest.raises(MobilityError, match=r"(?s)randomTrips\.py failed \(exit 1\).*boom: no valid edges"):
        netgen.grid_scenario(tmp_path, **PARAMS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("junctions", 1), ("edge_length_m", 0.0), ("lanes", 0), ("trip_period_s", -1.0), ("end_s", 0.0), ("seed", -1)],
)
def test_invalid_parameters_are_named(tmp_path, key, value):
    with pytest.raises(MobilityError, match=key):
        netgen.grid_scenario(tmp_path, **{**PARAMS, key: value})


def test_same_parameters_build_identical_content_in_another_cache(tmp_path):
    a = netgen.grid_scenario(tmp_path / "a", **PARAMS)
    b = netgen.grid_scenario(tmp_path / "b", **PARAMS)
    assert a.net.parent.name == b.net.parent.name
    # ElementTree drops the generator comments, which carry a timestamp.
    for pa, pb in ((a.net, b.net), (a.routes, b.routes)):
        assert ET.tostring(ET.parse(pa).getroot()) == ET.tostring(ET.parse(pb).getroot())
