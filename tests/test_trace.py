"""Streamed run traces: appended per flush, a torn last batch tolerated, cut back to a checkpoint, consolidated once;
and checkpoints that detect their own damage."""

import itertools

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from cosim import checkpoint
from cosim import trace as trace_module
from cosim.trace import SCHEMA, TraceWriter, read_run, read_table


def handover(i):
    return {"time_s": float(i), "vehicle": f"v{i}", "from_rsu": -1, "to_rsu": i % 3, "kind": "attach",
            "interruption_s": 0.0}


def written(out, rounds, lengths=None):
    trace = TraceWriter(out, {"status": "running"}, lengths=lengths)
    for r in rounds:
        trace.add("handovers", [handover(10 * r + i) for i in range(3)])
        trace.flush()
    return trace


def test_each_flush_appends_only_the_new_rows(tmp_path):
    trace = written(tmp_path, [0])
    sizes = [trace.lengths()["handovers"]]
    for r in range(1, 4):
        trace.add("handovers", [handover(10 * r + i) for i in range(3)])
        trace.flush()
        sizes.append(trace.lengths()["handovers"])
    steps = {b - a for a, b in itertools.pairwise(sizes)}
    assert len(steps) == 1 and steps.pop() > 0  # equal rows, equal bytes: no rewrite of earlier rounds
    assert read_table(tmp_path, "rounds").empty  # a table without rows stays its stream's schema header
    assert list(read_table(tmp_path, "handovers")["vehicle"]) == [f"v{10 * r + i}" for r in range(4) for i in range(3)]


def test_torn_last_batch_is_ignored_and_cut_on_resume(tmp_path):
    trace = written(tmp_path, [0, 1])
    lengths = trace.lengths()
    trace.add("handovers", [handover(99)])
    trace.flush()
    trace.close()
    stream = trace.stream_path("handovers")
    stream.write_bytes(stream.read_bytes()[:-7])  # a crash in the middle of the last batch
    assert len(read_table(tmp_path, "handovers")) == 6
    resumed = written(tmp_path, [2], lengths=lengths)  # continue from the checkpoint's lengths
    resumed.consolidate(keep_streams=False)
    run = read_run(tmp_path)
    expected = pd.DataFrame([handover(10 * r + i) for r in (0, 1, 2) for i in range(3)]).astype(SCHEMA["handovers"])
    pd.testing.assert_frame_equal(run["handovers"], expected)
    assert not list(tmp_path.glob("*.arrows")) and run["manifest"]["status"] == "running"


@pytest.mark.parametrize("row_group_rows", [4, trace_module.ROW_GROUP_ROWS])
def test_consolidated_parquet_depends_only_on_the_rows(tmp_path, monkeypatch, row_group_rows):
    """One flush per round or one for all: the same parquet bytes, so a resumed run can match an uninterrupted one;
    row groups are cut at fixed row counts whatever the batches."""
    monkeypatch.setattr(trace_module, "ROW_GROUP_ROWS", row_group_rows)
    written(tmp_path / "a", [0, 1, 2]).consolidate(keep_streams=False)
    trace = TraceWriter(tmp_path / "b", {})
    trace.add("handovers", [handover(10 * r + i) for r in range(3) for i in range(3)])
    trace.flush()
    trace.consolidate(keep_streams=True)
    for name in SCHEMA:
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()
    assert (tmp_path / "b" / "handovers.arrows").is_file()
    groups = pq.ParquetFile(tmp_path / "a" / "handovers.parquet").metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == (
        [4, 4, 1] if row_group_rows == 4 else [9])
    assert list(read_run(tmp_path / "a")["handovers"]["vehicle"]) == [f"v{10 * r + i}" for r in range(3)
                                                                      for i in range(3)]


def test_shorter_stream_than_checkpoint_is_refused(tmp_path):
    lengths = written(tmp_path, [0]).lengths()
    with pytest.raises(ValueError, match="shorter than its checkpoint"):
        TraceWriter(tmp_path, {}, lengths={**lengths, "handovers": lengths["handovers"] + 1})


def save(tmp_path, next_round):
    state = {"global_state": {"w": torch.full((2,), float(next_round))}}
    return checkpoint.save(tmp_path, checkpoint.Checkpoint(next_round, {"rounds": next_round}, state,
                                                           checkpoint.rng_state()))


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    for next_round in (2, 4, 6):
        newest = save(tmp_path, next_round)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-000004.ckpt", "round-000006.ckpt"]
    loaded, skipped = checkpoint.load_latest(tmp_path)
    assert loaded.next_round == 6 and skipped == [] and torch.equal(loaded.learning["global_state"]["w"],
                                                                    torch.full((2,), 6.0))
    newest.write_bytes(newest.read_bytes()[:-100])
    loaded, skipped = checkpoint.load_latest(tmp_path)
    assert loaded.next_round == 4 and loaded.lengths == {"rounds": 4} and "round-000006.ckpt" in skipped[0]
    older = tmp_path / "checkpoints" / "round-000004.ckpt"
    data = bytearray(older.read_bytes())
    data[-1] ^= 1  # one flipped bit
    older.write_bytes(bytes(data))
    assert checkpoint.load_latest(tmp_path)[0] is None
