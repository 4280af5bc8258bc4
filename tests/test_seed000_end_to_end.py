"""UCB-DUAL, HomoLoRA and HetLoRA through the real CLI on the tiny scenario (flat mode, tiny-BERT at rank 16): the
planned ranks reach the traces, and each participant's bits and compute follow its rank."""

from pathlib import Path

import numpy as np
import pytest

from cosim.cli import main
from cosim.schedulers.rank import tier
from cosim.trace import read_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
OVERRIDES = ["learning.lora_rank=16", "simulation.rounds=3", "scheduler.participants=6"]
# tiny-BERT, LoRA on query and value: head 32·2 + 2 values; per rank 2 layers × 2 modules × (32 in + 32 out)
HEAD_VALUES, PER_RANK_VALUES = 66, 256
BASE_FLOP, FLOP_PER_RANK = 4 * 2 * (4 * 32 * 32 + 2 * 32 * 64), 6 * PER_RANK_VALUES


@pytest.fixture(scope="module")
def rank_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed000")
    runs = {}
    for name in ("ucb-dual", "homolora", "hetlora"):
        argv = ["run", str(TINY), "--out", str(out / name), "--quiet", "--set", f"scheduler.name={name}"]
        assert main([*argv, *[item for override in OVERRIDES for item in ("--set", override)]]) == 0
        runs[name] = read_run(out / name)
    return runs


@pytest.mark.parametrize("name", ["ucb-dual", "homolora", "hetlora"])
def test_ranks_set_bits_compute_and_losses(rank_runs, name):
    run = rank_runs[name]
    parts = run["participants"]
    assert run["manifest"]["status"] == "complete" and len(parts) > 0
    assert set(parts["rank"]) <= {2, 4, 8, 16}
    bits = (HEAD_VALUES + PER_RANK_VALUES * parts["rank"]) * 32
    assert (parts["upload_bits"] == bits).all() and (parts["download_bits"] == bits).all()
    rounds = run["rounds"]
    done = parts[parts["outcome"] == "arrived"]
    assert (rounds.set_index("round")["upload_bytes"] == done.groupby("round")["upload_bits"].sum()
            .reindex(rounds["round"], fill_value=0) // 8).all()
    # compute: the device's 1.2 s per round at the task's rank (8 samples × 3e8 cycles at 2 GHz), scaled by FLOPs
    finished = parts.dropna(subset=["compute_end_s"])
    finished = finished[finished["outcome"] != "deadline"]
    scale = (BASE_FLOP + FLOP_PER_RANK * finished["rank"]) / (BASE_FLOP + FLOP_PER_RANK * 16)
    np.testing.assert_allclose(finished["compute_time_s"], 1.2 * scale, rtol=1e-9)
    assert done["train_loss"].gt(0).all() and parts.loc[parts["outcome"] != "arrived", "train_loss"].isna().all()
    np.testing.assert_allclose(rounds["train_loss"], done.groupby("round")["train_loss"].mean()
                               .reindex(rounds["round"]).to_numpy())


def test_each_scheduler_assigns_ranks_its_own_way(rank_runs):
    assert (rank_runs["homolora"]["participants"]["rank"] == 16).all()
    het = rank_runs["hetlora"]["participants"]
    np.testing.assert_array_equal(het["rank"], [(2, 4, 8, 16)[tier(v, 4)] for v in het["vehicle"]])
    assert het["rank"].nunique() > 1
    ucb = rank_runs["ucb-dual"]["participants"]
    first = ucb.groupby("vehicle")["round"].transform("min") == ucb["round"]
    assert (ucb.loc[first, "rank"] == 2).all()  # every arm once, the smallest first
    assert ucb.loc[~first, "rank"].gt(2).any()
