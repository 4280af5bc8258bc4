"""Malformed scenarios and files are refused before anything heavy: exit 2 and one line naming the field and the
fix, never a traceback or a hang. The explicit cases rebuild the 68 of issue 16 from its text (NaN / inf / absurd
ticks, strict types, unbounded rounds, non-UTF-8 and directory scenarios, broken dataset, network, route, trace and
RSU files, unknown LoRA targets, Dirichlet α = 1e-9, NUL in the name); the property tests throw generated ones."""

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.cli import main
from cosim.scenario import load_scenario
from cosim.trace import read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
STATIC = ["mobility.source=\"static-disk\"", "mobility.disk.devices=8"]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def refused(argv: list[str], capsys) -> str:
    """Exit 2 with exactly one error line; that line."""
    code, err = cli(argv, capsys)
    assert code == 2, f"accepted: {argv}"
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def dataset(root: Path, train: str | bytes, dev: str | bytes = "sentence\tlabel\nfine\t1\nbad\t0\n") -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (("train.tsv", train), ("dev.tsv", dev)):
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return str(root)


def good_rows(count: int) -> str:
    return "".join(f"sentence {i}\t{i % 2}\n" for i in range(count))


# (case id, overrides on tests/data/tiny.toml, text the error line must hold: the field path)
OVERRIDES = [
    ("tick-inf", ["simulation.mobility_tick_s=inf"], "simulation.mobility_tick_s: must be a finite number"),
    ("tick-1e-300", ["simulation.mobility_tick_s=1e-300"], "simulation.mobility_tick_s: must be >= 0.01"),
    ("tick-nan", ["simulation.mobility_tick_s=nan"], "simulation.mobility_tick_s"),
    ("tick-zero", ["simulation.mobility_tick_s=0"], "simulation.mobility_tick_s"),
    ("deadline-inf", ["simulation.round_deadline_s=inf"], "simulation.round_deadline_s"),
    ("deadline-nan", ["simulation.round_deadline_s=nan"], "simulation.round_deadline_s"),
    ("deadline-huge", ["simulation.round_deadline_s=1e9"], "simulation.round_deadline_s: must be <= 86400"),
    ("ticks-per-round", ["simulation.mobility_tick_s=0.01", "simulation.round_deadline_s=86400"],
     "simulation: round_deadline_s / mobility_tick_s = 8.64e+06 mobility ticks per round"),
    ("start-inf", ["simulation.start_s=inf"], "simulation.start_s"),
    ("start-negative", ["simulation.start_s=-1"], "simulation.start_s: must be >= 0"),
    ("rounds-zero", ["simulation.rounds=0"], "simulation.rounds: must be >= 1"),
    ("rounds-unbounded", ["simulation.rounds=1000000000000"], "simulation.rounds: must be <= 100000"),
    ("rounds-bool", ["simulation.rounds=true"], "simulation.rounds: must be an integer"),
    ("rounds-float", ["simulation.rounds=2.5"], "simulation.rounds: must be an integer"),
    ("rounds-string", ['simulation.rounds="4"'], "simulation.rounds: must be an integer"),
    ("noise-nan", ["channel.noise_psd_dbm_per_hz=nan"], "channel.noise_psd_dbm_per_hz: must be a finite number"),
    ("noise-inf", ["channel.noise_psd_dbm_per_hz=inf"], "channel.noise_psd_dbm_per_hz"),
    ("noise-positive", ["channel.noise_psd_dbm_per_hz=30"], "channel.noise_psd_dbm_per_hz: must be <= -100"),
    ("exponent-nan", ["channel.exponent=nan"], "channel.exponent"),
    ("shadowing-inf", ["channel.shadowing_std_db=inf"], "channel.shadowing_std_db"),
    ("shadowing-huge", ["channel.shadowing_std_db=1e6"], "channel.shadowing_std_db: must be <= 30"),
    ("carrier-nan", ["channel.carrier_hz=nan"], "channel.carrier_hz"),
    ("mcs-cap-nan", ["channel.max_spectral_efficiency=nan"], "channel.max_spectral_efficiency"),
    ("mcs-cap-minus-inf", ["channel.max_spectral_efficiency=-inf"], "channel.max_spectral_efficiency: must be > 0"),
    ("fading-typo", ['channel.fading="rayleig"'], "channel.fading: must be one of"),
    ("tx-power-inf", ["energy.tx_power_w=inf"], "energy.tx_power_w"),
    ("battery-nan", ["energy.battery_j=nan"], "energy.battery_j"),
    ("energy-profile-clash", ['energy.profile="obu-low"'], "energy: battery_j, cycles_per_sample set beside"),
    ("rsu-radius-inf", ["rsu.radius_m=inf"], "rsu.radius_m"),
    ("rsu-bandwidth-nan", ["rsu.bandwidth_hz=nan"], "rsu.bandwidth_hz"),
    ("rsu-hysteresis-minus-inf", ["rsu.hysteresis_db=-inf"], "rsu.hysteresis_db"),
    ("rsu-count-zero", ["rsu.count=0"], "rsu.count: must be >= 1"),
    ("rsu-count-bool", ["rsu.count=false"], "rsu.count: must be an integer"),
    ("rsu-junctions-static", [*STATIC, 'rsu.layout="junctions"'], 'rsu.layout: "junctions" needs a road network'),
    ("rsu-file-missing", ['rsu.layout="file"'], 'rsu: layout = "file" needs file'),
    ("step-1e-300", ["mobility.step_length_s=1e-300"], "mobility.step_length_s: must be >= 0.001"),
    ("step-nan", ["mobility.step_length_s=nan"], "mobility.step_length_s"),
    ("teleport-nan", ["mobility.time_to_teleport_s=nan"], "mobility.time_to_teleport_s"),
    ("demand-window-empty", ["mobility.demand.begin_s=500", "mobility.demand.end_s=400"],
     "mobility.demand: begin_s = 500 must be before end_s = 400"),
    ("trip-period-1e-300", ["mobility.demand.trip_period_s=1e-300"], "mobility.demand.trip_period_s: must be >= 0.01"),
    ("gui-int", ["mobility.gui=1"], "mobility.gui: must be true or false, got 1"),
    ("grid-one-junction", ["mobility.network.junctions=1"], "mobility.network.junctions: must be >= 2"),
    ("trace-source-without-file", ['mobility.source="trace"'], 'mobility: source = "trace" needs trace'),
    ("lr-nan", ["learning.lr=nan"], "learning.lr"),
    ("lr-inf", ["learning.lr=inf"], "learning.lr"),
    ("lr-divergent", ["learning.lr=1e6"], "learning.lr: must be <= 10"),
    ("lora-alpha-inf", ["learning.lora_alpha=inf"], "learning.lora_alpha"),
    ("lora-dropout-nan", ["learning.lora_dropout=nan"], "learning.lora_dropout"),
    ("lora-target-unknown", ['learning.lora_targets=["qkv"]'], "learning.lora_targets: 'qkv' not a linear layer"),
    ("lora-target-not-linear", ['learning.lora_targets=["LayerNorm"]'], "learning.lora_targets: 'LayerNorm'"),
    ("lora-targets-empty", ["learning.lora_targets=[]"], "learning.lora_targets"),
    ("lora-targets-string", ['learning.lora_targets="query"'], "learning.lora_targets: must be a list"),
    ("lora-rank-too-big", ["learning.lora_rank=64"], "learning.lora_rank: 64 exceeds the model's width 32"),
    ("max-length-positions", ["learning.max_length=1024"], "learning.max_length: must be <= 512"),
    ("dirichlet-1e-9", ['learning.partition="dirichlet"', "learning.dirichlet_alpha=1e-9"],
     "learning.dirichlet_alpha: must be >= 0.01"),
    ("dirichlet-no-draw", ['learning.partition="dirichlet"', "learning.dirichlet_alpha=0.01", "learning.clients=64",
                           "learning.samples_per_client=1"], "learning.dirichlet_alpha: partition_dirichlet"),
    ("clients-bool", ["learning.clients=true"], "learning.clients: must be an integer"),
    ("samples-exceed-data", ["learning.clients=100000"], "learning.samples_per_client: clients × samples_per_client"),
    ("local-steps-unbounded", ["learning.local_steps=1000000000"], "learning.local_steps: must be <= 10000"),
    ("model-unknown", ['learning.model="gpt-17"'], "learning.model: must be one of minilm, tiny-bert"),
    ("dataset-unknown", ['learning.dataset="nowhere"'], "learning.dataset: must be one of sst2"),
    ("split-field-in-flat", ["learning.server_lr=0.1"], "learning: server_lr is not used when mode = 'flat'"),
    ("scheduler-unknown", ['scheduler.name="randon"'], "scheduler.name: unknown scheduler 'randon'"),
    ("tau-bar-inf", ['scheduler.name="lyapunov"', "scheduler.tau_bar_s=inf"], "scheduler.tau_bar_s"),
    ("vehicle-sample-nan", ["trace.vehicle_sample_s=nan"], "trace.vehicle_sample_s"),
    ("name-nul", ['name="a\\u0000b"'], "name: must be non-empty printable text"),
    ("name-empty", ['name=""'], "name: must be non-empty printable text"),
    ("seed-negative", ["seed=-1"], "seed: must be >= 0"),
    ("seed-huge", ["seed=1180591620717411303424"], "seed: must be <="),
    ("seed-float", ["seed=1.0"], "seed: must be an integer"),
    ("unknown-key", ["simulation.rundos=3"], "simulation.rundos: unknown key; did you mean 'rounds'?"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("overrides", "expected"), [case[1:] for case in OVERRIDES],
                         ids=[case[0] for case in OVERRIDES])
def test_malformed_scenario_is_refused_naming_the_field(command, overrides, expected, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [command, str(TINY), *(["--out", str(out), "--quiet"] if command == "run" else [])]
    err = refused(argv + [item for override in overrides for item in ("--set", override)], capsys)
    assert expected in err
    assert not out.exists()  # refused before the run directory, SUMO or the model


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# (case id, builder: tmp dir -> (scenario path, overrides), text the error line must hold)
def _scenario_bytes(content: bytes):
    return lambda tmp: (_write(tmp / "s.toml", content), [])


def _with_dataset(train, dev="sentence\tlabel\nfine\t1\nbad\t0\n"):
    return lambda tmp: (TINY, [f'learning.dataset="{dataset(tmp / "data", train, dev)}"', "learning.clients=2",
                               "learning.samples_per_client=2"])


def _with_file(field: str, name: str, content: str | bytes, *extra: str):
    def build(tmp):
        path = json.dumps(str(_write(tmp / name, content)))
        return TINY, [*extra, f"{field}={f'[{path}]' if field.endswith('files') else path}"]
    return build


def _images(tmp: Path, npz: bytes | None) -> Path:
    """A dataset directory whose train split is a broken .npz (npz bytes) or a class folder of broken images."""
    if npz is not None:
        _write(tmp / "images" / "train.npz", npz)
    else:
        for label in ("cat", "dog"):
            _write(tmp / "images" / "train" / label / "0.png", b"not a png")
    _write(tmp / "images" / "dev.npz", b"")
    return tmp / "images"


GRID_NET = ['mobility.network.kind="file"']
FILES = [
    ("scenario-not-utf8", _scenario_bytes(b'name = "caf\xe9"\n'), "is not UTF-8 text (byte 0xe9 on line 1)"),
    ("scenario-utf16", _scenario_bytes('name = "x"\n'.encode("utf-16")), "is UTF-16 text; save it as UTF-8"),
    ("scenario-directory", lambda tmp: (tmp, []), "is a directory; pass a scenario .toml file"),
    ("scenario-not-toml", _scenario_bytes(b"[simulation\nrounds = 3\n"), "not valid TOML"),
    ("scenario-missing", lambda tmp: (tmp / "missing.toml", []), "file not found"),
    ("dataset-ragged-row", _with_dataset("sentence\tlabel\n" + good_rows(4) + "a\t1\textra\n"),
     "learning.dataset: "),
    ("dataset-short-row", _with_dataset("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t0\ne\n"),
     "column label has empty labels (first in data row 3)"),
    ("dataset-not-utf8", _with_dataset(b"sentence\tlabel\ncaf\xe9\t1\nok\t0\nok\t1\nok\t0\n"), "not UTF-8"),
    ("dataset-no-label-column", _with_dataset("sentence\ttag\na\t1\nb\t0\nc\t1\nd\t0\n"),
     "needs a header row with columns sentence and label"),
    ("dataset-empty-file", _with_dataset(""), "the file is empty"),
    ("dataset-negative-label", _with_dataset("sentence\tlabel\na\t-1\nb\t0\nc\t1\nd\t0\n"), "non-negative"),
    ("dataset-huge-label", _with_dataset("sentence\tlabel\na\t1000000000\nb\t0\nc\t1\nd\t0\n"), "below 10000"),
    ("dataset-empty-dev", _with_dataset("sentence\tlabel\n" + good_rows(4), "sentence\tlabel\n"),
     "the dev split of"),
    ("dataset-empty-train", _with_dataset("sentence\tlabel\n"), "the train split of"),
    ("dataset-labels-mixed-kinds", _with_dataset("sentence\tlabel\n" + good_rows(4), "sentence\tlabel\nx\tpos\n"),
     "integers in one split and names in the other"),
    ("dataset-npz-not-an-archive", lambda tmp: (TINY, [f'learning.dataset="{_images(tmp, b"junk")}"']),
     "not a readable .npz archive"),
    ("dataset-image-unreadable", lambda tmp: (TINY, [f'learning.dataset="{_images(tmp, None)}"']),
     "not a readable image"),
    ("net-not-xml", _with_file("mobility.network.path", "city.net.xml", "not xml <", *GRID_NET),
     "mobility.network.path: "),
    ("net-wrong-root", _with_file("mobility.network.path", "city.net.xml", "<routes/>", *GRID_NET),
     "has root element <routes>, expected <net>"),
    ("routes-bad-gzip", _with_file("mobility.demand.files", "r.rou.xml.gz", b"plain bytes",
                                   'mobility.demand.kind="routes"'), "mobility.demand.files[0]: "),
    ("trace-missing-column", _with_file("mobility.trace", "t.csv", "id,t,x\nv,0,1\n", 'mobility.source="trace"'),
     "mobility.trace: trace file"),
    ("trace-not-utf8", _with_file("mobility.trace", "t.csv", b"id,t,x,y,speed\n\xe9,0,1,1,1\n",
                                  'mobility.source="trace"'), "mobility.trace: "),
    ("junctions-too-few", lambda tmp: (ROOT / "scenarios" / "bologna.toml", ["rsu.count=500"]),
     "rsu.count: "),
    ("rsu-file-bom", _with_file("rsu.file", "rsus.csv", b"\xef\xbb\xbfx,y\n0,0\n", 'rsu.layout="file"'),
     "rsu.file: "),
    ("rsu-file-not-number", _with_file("rsu.file", "rsus.csv", "x,y\n0,north\n", 'rsu.layout="file"'),
     "rsu.file: RSU file"),
]


@pytest.mark.parametrize(("build", "expected"), [case[1:] for case in FILES], ids=[case[0] for case in FILES])
def test_malformed_file_is_refused_naming_the_field(build, expected, tmp_path, capsys):
    scenario, overrides = build(tmp_path)
    argv = ["validate", str(scenario), *(item for override in overrides for item in ("--set", override))]
    assert expected in refused(argv, capsys)


def test_the_issues_cases_are_all_here():
    """Issue 16 tried 68 malformed scenarios; every kind it names is among the cases above."""
    assert len(OVERRIDES) + len(FILES) >= 68
    assert len({case[0] for case in OVERRIDES + FILES}) == len(OVERRIDES) + len(FILES)


def _leaves(table: dict, prefix: str = "") -> list[str]:
    return [path for key, value in table.items()
            for path in (_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]


FIELDS = sorted({*_leaves(load_scenario(TINY).model_dump(mode="json")), "scheduler.participants",
                 "scheduler.tau_bar_s", "scheduler.drift", "mobility.trace", "rsu.file", "mobility.network.path",
                 "mobility.demand.files", "learning.server_lr", "simulation.rundos", "channel"})
TOML_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e-300", "1e300", "0", "-0.0", "true", "false", "[]", "{}", "[1, 2]",
                     '"file"', '"junctions"', '"dirichlet"', '"static-disk"', '"trace"', '"lyapunov"', '"split"',
                     '["qkv"]', '["query"]', '"a\\u0000b"', '"../../x"']),
    st.text(max_size=12).map(lambda text: json.dumps(text, ensure_ascii=False)),
)
SECTIONS = ("name|seed|simulation|mobility|rsu|channel|energy|learning|scheduler|trace|tasks|energy_budget|federation"
            "|--set")
NAMES_A_FIELD = re.compile(rf"(?:: |; )(?:{SECTIONS})\b[\w.\[\]]*:")


def _quiet_main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().strip()


def _finite(value, path: str = "") -> list[str]:
    """Paths of the non-finite numbers in a dumped scenario (the MCS cap documents inf)."""
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in _finite(item, f"{path}.{key}")]
    if isinstance(value, float) and not math.isfinite(value) and path != ".channel.max_spectral_efficiency":
        return [path]
    return []


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), TOML_VALUES), min_size=1, max_size=3))
def test_generated_scenarios_are_refused_naming_a_field_or_valid(overrides):
    """Invariant of issue 16: exit 2 with one line naming a field, or a scenario that is valid (finite, in range)."""
    argv = ["validate", str(TINY), *(item for key, value in overrides for item in ("--set", f"{key}={value}"))]
    code, err = _quiet_main(argv)
    if code == 0:
        assert not _finite(load_scenario(TINY, [f"{key}={value}" for key, value in overrides]).model_dump())
        return
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert NAMES_A_FIELD.search(err), err


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.lists(st.sampled_from(["a b", "1", "0", "2", "", "x\ty", '"', "-1", "nan", "é"]),
                                   min_size=1, max_size=4).map("\t".join), max_size=8)
                 .map(lambda rows: ("sentence\tlabel\n" + "\n".join(rows)).encode())))
def test_generated_dataset_files_are_refused_naming_the_field_or_valid(tmp_path_factory, content):
    root = dataset(tmp_path_factory.mktemp("data"), content)
    argv = ["validate", str(TINY), "--set", f"learning.dataset={json.dumps(root)}", "--set", "learning.clients=1",
            "--set", "learning.samples_per_client=1"]
    code, err = _quiet_main(argv)
    assert code == 0 or (code == 2 and "\n" not in err and "learning.dataset: " in err), err


EDGES = {
    "simulation.mobility_tick_s": ["0.01", "60"], "simulation.round_deadline_s": ["0.05", "60"],
    "channel.noise_psd_dbm_per_hz": ["-230", "-100"], "channel.shadowing_std_db": ["30"],
    "channel.noise_figure_db": ["30"], "channel.max_spectral_efficiency": ["1e-9", "inf"],
    "channel.fading": ['"rician"', '"none"'], "channel.rician_k_db": ["-20", "40"],
    "channel.reference_loss_db": ["200"],
    "rsu.bandwidth_hz": ["1e-3", "1e12"], "rsu.radius_m": ["1e-3", "1e9"], "energy.tx_power_w": ["1e-12", "1e6"],
    "energy.battery_j": ["1e-9"], "mobility.disk.radius_m": ["1e-3", "1e7"], "learning.lr": ["10"],
}


@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(EDGES)), st.none(), min_size=3, max_size=6)
       .flatmap(lambda keys: st.fixed_dictionaries({key: st.sampled_from(EDGES[key]) for key in keys})))
def test_valid_scenarios_at_their_bounds_run_to_finite_traces(tmp_path_factory, edges):
    """The other side of the invariant: what validation accepts runs, and its traces hold no NaN where a number was
    measured (accuracy and loss are NaN only in rounds without evaluation, phase times only for phases not begun)."""
    out = tmp_path_factory.mktemp("run") / "r"
    overrides = [*STATIC, "simulation.rounds=2", "learning.eval_every=1", *(f"{k}={v}" for k, v in edges.items())]
    code, err = _quiet_main(["run", str(TINY), "--out", str(out), "--quiet",
                             *(item for override in overrides for item in ("--set", override))])
    assert code == 0, err
    run = read_run(out)
    rounds, parts = run["rounds"], run["participants"]
    assert len(rounds) == 2 and rounds[["start_s", "end_s", "duration_s", "energy_j", "accuracy"]].notna().all().all()
    measured = ["distance_m", "gain_db", "rate_bps", "bandwidth_hz", "compute_energy_j", "transmit_energy_j",
                "energy_j", "battery_j"]
    assert parts[measured].notna().all().all(), parts[measured].describe()
    assert run["vehicles"][["x_m", "y_m", "speed_mps", "battery_j"]].notna().all().all()
