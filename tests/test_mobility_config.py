"""The [mobility] and [rsu] scenario tables: validation, path resolution, sources, RSU layouts, `mobility record`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cosim.cli import main
from mobility.config import MobilityConfig, RsuConfig, open_mobility, place_rsus
from mobility.errors import MobilityError
from mobility.pipelined import PipelinedSumo
from mobility.trace import TraceMobility

ROOT = Path(__file__).resolve().parents[1]
BOLOGNA_NET = "mobility/data/bologna-acosta/acosta_buslanes.net.xml.gz"


def test_tables_without_kind_are_a_grid_and_random_trips():
    config = MobilityConfig(network={"junctions": 3, "edge_length_m": 150.0}, demand={"trip_period_s": 2.0})
    assert config.network.kind == "grid" and config.demand.kind == "random"


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"source": "trace"}, 'source = "trace" needs trace'),
        ({"gui": True}, 'gui and remote need backend = "traci"'),
        ({"backend": "traci", "remote": "localhost"}, "remote"),
        ({"network": {"kind": "file", "path": "nope.net.xml"}}, r"(?s)network\.file\.path.*file not found"),
        ({"network": {"kind": "hexagon"}}, "hexagon"),
        ({"demand": {"kind": "routes", "files": []}}, "files"),
    ],
)
def test_inconsistent_mobility_tables_are_named(table, match):
    with pytest.raises(ValidationError, match=match):
        MobilityConfig(**table)


def test_rsu_file_layout_needs_a_file():
    with pytest.raises(ValidationError, match='layout = "file" needs file'):
        RsuConfig(layout="file")


def test_relative_paths_resolve_from_the_project_root_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = MobilityConfig(network={"kind": "file", "path": BOLOGNA_NET})
    assert config.network.path == ROOT / BOLOGNA_NET
    (tmp_path / "mine.net.xml").write_text("<net/>")
    assert MobilityConfig(network={"kind": "file", "path": "mine.net.xml"}).network.path == tmp_path / "mine.net.xml"


def test_place_rsus_by_spacing_junctions_and_file(tmp_path):
    bounds = (0.0, 0.0, 1000.0, 500.0)
    assert place_rsus(RsuConfig(spacing_m=250.0), bounds).count == 8
    assert place_rsus(RsuConfig(count=6), bounds).count == 6
    with pytest.raises(MobilityError, match='"junctions" needs a road network'):
        place_rsus(RsuConfig(layout="junctions"), bounds)
    layout = place_rsus(RsuConfig(layout="junctions", count=3), bounds, ROOT / BOLOGNA_NET)
    assert layout.count == 3
    csv = tmp_path / "rsus.csv"
    csv.write_text("x,y,height_m\n1,2,25\n")
    layout = place_rsus(RsuConfig(layout="file", file=csv, radius_m=123.0), bounds)
    np.testing.assert_array_equal(layout.radius_m, [123.0])
    np.testing.assert_array_equal(layout.height_m, [25.0])


def test_open_mobility_starts_sumo_or_replays_a_trace(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("id,t,x,y,speed\na,0,0,0,1\na,10,10,0,1\n")
    with open_mobility(MobilityConfig(source="trace", trace=trace), tmp_path, seed=1) as mobility:
        assert isinstance(mobility, TraceMobility) and mobility.net_file is None
        np.testing.assert_allclose(mobility.advance(5.0).xy_m, [[5.0, 0.0]])
    config = MobilityConfig(network={"junctions": 3, "edge_length_m": 150.0}, demand={"end_s": 100.0}, scale=2.0)
    with open_mobility(config, tmp_path, seed=1) as mobility:
        assert isinstance(mobility, PipelinedSumo) and mobility.net_file.is_file()
        assert mobility.advance(50.0).count > 0


def test_cli_records_a_trace_that_replays_the_scenario(tmp_path, capsys):
    out = tmp_path / "drive.parquet"
    assert main(["mobility", "record", str(ROOT / "tests/data/tiny.toml"), "--out", str(out), "--duration", "5"]) == 0
    assert "samples of" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert sorted(frame["t"].unique().tolist()) == [60.0, 61.0, 62.0, 63.0, 64.0, 65.0]  # tick 1 s from start_s
    assert main(["mobility", "record", str(ROOT / "tests/data/tiny.toml"), "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err
