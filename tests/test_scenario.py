from pathlib import Path

import pytest

from cosim.cli import main
from cosim.scenario import ScenarioError, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[1]


def problems(raw: dict) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw)
    return info.value.problems


def test_shipped_scenarios_validate():
    for path in [*sorted((ROOT / "scenarios").glob("*.toml")), ROOT / "tests" / "data" / "tiny.toml"]:
        assert load_scenario(path).simulation.rounds >= 1


def test_bound_error_names_field_and_value():
    assert problems({"rsu": {"count": 0}}) == ["rsu.count: must be >= 1, got 0"]


def test_every_problem_is_reported_at_once():
    found = problems({"rsu": {"count": 0}, "simulation": {"rounds": -1}})
    assert "rsu.count: must be >= 1, got 0" in found
    assert "simulation.rounds: must be >= 1, got -1" in found


def test_unknown_key_suggests_nearest_name():
    assert problems({"rsu": {"cuont": 3}}) == ["rsu.cuont: unknown key; did you mean 'count'?"]
    assert problems({"simulaton": {}}) == ["simulaton: unknown key; did you mean 'simulation'?"]


def test_scheduler_tables_are_validated_by_the_named_scheduler():
    assert problems({"scheduler": {"name": "random", "participant": 3}}) == [
        "scheduler.participant: unknown key; did you mean 'participants'?"]
    assert problems({"scheduler": {"name": "randon"}})[0].startswith(
        "scheduler.name: unknown scheduler 'randon'; did you mean 'random'?")
    assert parse_scenario({"scheduler": {"name": "random", "participants": 4}}).scheduler.participants == 4


def test_unknown_model_is_rejected_with_the_choices():
    (problem,) = problems({"learning": {"model": "gpt-17"}})
    assert problem.startswith("learning.model: must be one of minilm, tiny-bert")


def test_overrides_are_typed(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[simulation]\nrounds = 3\n")
    scenario = load_scenario(path, ["simulation.rounds=7", "scheduler.name=random", "channel.fading=none"])
    assert scenario.simulation.rounds == 7
    assert scenario.scheduler.name == "random"
    assert scenario.channel.fading == "none"


def test_validate_cli_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[rsu]\ncount = 0\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rsu.count: must be >= 1, got 0" in err
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("[rsu\n")
    assert main(["validate", str(broken)]) == 2
    assert main(["validate", str(ROOT / "scenarios" / "default.toml")]) == 0


def test_learning_mode_and_its_own_fields():
    assert problems({"learning": {"mode": "splt"}}) == ["learning.mode: must be one of 'flat' or 'split', got 'splt'"]
    (problem,) = problems({"learning": {"mode": "split", "lr": 0.1, "local_steps": 3}})
    assert problem.startswith("learning: lr, local_steps are not used when mode = 'split'; remove them")
    (problem,) = problems({"learning": {"server_lr": 0.1}})
    assert problem.startswith("learning: server_lr is not used when mode = 'flat'; remove it")
    split = parse_scenario({"learning": {"mode": "split", "server_optimizer": "adam"}}).learning
    assert (split.mode, split.server_optimizer) == ("split", "adam")
    assert problems({"learning": {"mode": "split", "server_optimizer": "adamw"}}) == [
        "learning.server_optimizer: must be one of 'sgd' or 'adam', got 'adamw'"]


def test_choosing_another_kind_replaces_the_table():
    """`--set scheduler.name=X` on a file whose scheduler has other fields (README's own example), in any order."""
    default = ROOT / "scenarios" / "default.toml"
    assert load_scenario(default, ["scheduler.name=all-in"]).scheduler.name == "all-in"
    lyapunov = load_scenario(default, ["scheduler.tau_bar_s=0.5", "scheduler.name=lyapunov"]).scheduler
    assert (lyapunov.name, lyapunov.tau_bar_s) == ("lyapunov", 0.5)
    assert load_scenario(default, ["scheduler.name=random", "scheduler.participants=3"]).scheduler.participants == 3
    assert load_scenario(default, ["scheduler.name=random"]).scheduler.participants == 10  # same kind: kept
    assert load_scenario(default, ["mobility.network.kind=grid"]).mobility.network.edge_length_m == 200.0
    with pytest.raises(ScenarioError, match=r"mobility\.network\.path: required; add it"):
        load_scenario(default, ["mobility.network.kind=file"])


def test_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[simulation]\nrounds = 3\n")
    assert load_scenario(path).simulation.rounds == 3
