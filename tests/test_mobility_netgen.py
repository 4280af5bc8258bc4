"""SUMO network/demand generation (grid, spider, random, OpenStreetMap) and its content-hash cache."""

import gzip
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from mobility import netgen
from mobility.errors import MobilityError

PARAMS = {"junctions": 3, "edge_length_m": 150.0, "lanes": 1, "trip_period_s": 2.0, "end_s": 60.0, "seed": 5}
# A hand-written OpenStreetMap extract: one two-way residential street of three nodes and a one-way side street.
OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6">
  <node id="1" lat="44.4950" lon="11.3400"/><node id="2" lat="44.4950" lon="11.3430"/>
  <node id="3" lat="44.4950" lon="11.3460"/><node id="4" lat="44.4975" lon="11.3430"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><nd ref="3"/><tag k="highway" v="residential"/></way>
  <way id="11"><nd ref="2"/><nd ref="4"/><tag k="highway" v="residential"/><tag k="oneway" v="yes"/></way>
</osm>
"""


def test_grid_scenario_builds_real_files_then_serves_them_from_cache(tmp_path, monkeypatch):
    files = netgen.grid_scenario(tmp_path, **PARAMS)
    (routes,) = files.routes
    net = ET.parse(files.net).getroot()
    junctions = [j for j in net.iter("junction") if j.get("type") != "internal"]
    assert len(junctions) == 9
    vehicles = list(ET.parse(routes).getroot().iter("vehicle"))
    assert 0 < len(vehicles) <= 30  # one trip every 2 s over 60 s, some dropped by --validate
    assert all(v.find("route") is not None for v in vehicles)  # duarouter produced routes, not bare trips
    # One entry for the net, one for the demand; no temporary directory left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([files.net.parent.name, routes.parent.name])

    mtimes = (files.net.stat().st_mtime_ns, routes.stat().st_mtime_ns)

    def no_sumo(*args, **kwargs):
        raise AssertionError(f"cache hit must not run SUMO tools: {args}")

    monkeypatch.setattr(subprocess, "run", no_sumo)
    again = netgen.grid_scenario(tmp_path, **PARAMS)
    assert again == files
    assert (files.net.stat().st_mtime_ns, routes.stat().st_mtime_ns) == mtimes


def _fake_tools(monkeypatch) -> list[list[str]]:
    built: list[list[str]] = []

    def fake_run_tool(out, cmd):
        built.append(cmd)
        name = netgen.ROUTES_NAME if any("randomTrips" in c for c in cmd) else netgen.NET_NAME
        (out / name).write_text(" ".join(cmd))  # content follows the inputs, as with the real tools

    monkeypatch.setattr(netgen, "_run_tool", fake_run_tool)
    return built


def test_every_parameter_and_the_sumo_version_change_the_cache_key(tmp_path, monkeypatch):
    built = _fake_tools(monkeypatch)
    base = netgen.grid_scenario(tmp_path, **PARAMS).routes[0].parent
    variants = [{**PARAMS, key: PARAMS[key] + 1} for key in PARAMS]
    dirs = {netgen.grid_scenario(tmp_path, **v).routes[0].parent for v in variants}
    monkeypatch.setattr(netgen, "sumo_version", lambda: "0.0.0")
    dirs.add(netgen.grid_scenario(tmp_path, **PARAMS).routes[0].parent)
    assert base not in dirs and len(dirs) == len(PARAMS) + 1
    # trip_period_s and end_s reuse the net of the base build: everything else rebuilds both.
    assert len(built) == 2 * (len(PARAMS) + 2) - 2


def test_input_file_content_is_part_of_the_key(tmp_path, monkeypatch):
    built = _fake_tools(monkeypatch)
    net = tmp_path / "user.net.xml"
    net.write_text("<net>one</net>")
    demand = {"trip_period_s": 1.0, "begin_s": 0.0, "end_s": 10.0, "seed": 1}
    first = netgen.random_demand(tmp_path / "cache", net, **demand)
    assert netgen.random_demand(tmp_path / "cache", net, **demand) == first and len(built) == 1
    net.write_text("<net>two</net>")  # same path, new content: must not be served the old routes
    assert netgen.random_demand(tmp_path / "cache", net, **demand) != first and len(built) == 2


def test_spider_and_random_networks_and_an_osm_extract_build(tmp_path):
    spider = netgen.generated_network(tmp_path, "spider", lanes=1, seed=1, arms=4, circles=2, space_m=80.0)
    random = netgen.generated_network(tmp_path, "random", lanes=2, seed=1, iterations=20, edge_length_m=80.0)
    osm = tmp_path / "bologna.osm.xml.gz"
    osm.write_bytes(gzip.compress(OSM.encode(), mtime=0))
    converted = netgen.osm_network(tmp_path, osm)
    for net, at_least in ((spider, 8), (random, 5), (converted, 2)):
        edges = [e for e in ET.parse(net).getroot().iter("edge") if e.get("function") != "internal"]
        assert len(edges) >= at_least, net
    # Random trips on the user's converted network.
    routes = netgen.random_demand(tmp_path, converted, trip_period_s=5.0, begin_s=0.0, end_s=60.0, seed=2)
    assert list(ET.parse(routes).getroot().iter("vehicle"))


def test_failed_build_leaves_no_cache_entry_and_names_the_tool(tmp_path, monkeypatch):
    real_run = subprocess.run

    def failing_random_trips(cmd, **kwargs):
        if any("randomTrips" in str(c) for c in cmd):
            return subprocess.CompletedProcess(cmd, 1, "", "boom: no valid edges")
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", failing_random_trips)
    with pytest.raises(MobilityError, match=r"(?s)randomTrips\.py failed \(exit 1\).*boom: no valid edges"):
        netgen.grid_scenario(tmp_path, **PARAMS)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert all((p / netgen.NET_NAME).is_file() for p in tmp_path.iterdir())  # only the finished net entry


def test_a_build_removes_what_killed_builds_on_this_host_left_behind(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = netgen._host()
    killed = tmp_path / f".0123456789abcdef.{host}-{ended.pid}.x1y2z3_a.tmp"
    running = tmp_path / f".0123456789abcdef.{host}-{os.getpid()}.k9m8n7_b.tmp"
    elsewhere = tmp_path / f".0123456789abcdef.{host}x-{ended.pid}.q1w2e3_c.tmp"
    for leftover in (killed, running, elsewhere):
        leftover.mkdir()
        (leftover / netgen.NET_NAME).write_text("half a net")
    netgen.grid_scenario(tmp_path, **PARAMS)
    assert not killed.exists() and running.exists() and elsewhere.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted([running.name,
                                                                                            elsewhere.name])


@pytest.mark.parametrize(
    ("key", "value"),
    [("junctions", 1), ("edge_length_m", 0.0), ("lanes", 0), ("trip_period_s", -1.0), ("end_s", 0.0), ("seed", -1)],
)
def test_invalid_parameters_are_named(tmp_path, key, value):
    with pytest.raises(MobilityError, match=key):
        netgen.grid_scenario(tmp_path, **{**PARAMS, key: value})


def test_unknown_kinds_options_and_missing_inputs_are_named(tmp_path):
    with pytest.raises(MobilityError, match="'hexagon' is not one of grid, spider, random"):
        netgen.generated_network(tmp_path, "hexagon", lanes=1, seed=1)
    with pytest.raises(MobilityError, match=r"unknown option.*junctions"):
        netgen.generated_network(tmp_path, "spider", lanes=1, seed=1, junctions=3)
    with pytest.raises(MobilityError, match=r"OpenStreetMap extract file .*nope.osm does not exist"):
        netgen.osm_network(tmp_path, tmp_path / "nope.osm")


def test_same_parameters_build_identical_content_in_another_cache(tmp_path):
    a = netgen.grid_scenario(tmp_path / "a", **PARAMS)
    b = netgen.grid_scenario(tmp_path / "b", **PARAMS)
    assert a.net.parent.name == b.net.parent.name and a.routes[0].parent.name == b.routes[0].parent.name
    # ElementTree drops the generator comments, which carry a timestamp.
    for pa, pb in ((a.net, b.net), (a.routes[0], b.routes[0])):
        assert ET.tostring(ET.parse(pa).getroot()) == ET.tostring(ET.parse(pb).getroot())
