"""The checks before anything heavy: the model outlined from its config alone, labels numbered over both splits,
num_labels from the data through a whole run, shipped scenarios and their files accepted."""

import json
from pathlib import Path

import numpy as np
import pytest

from cosim.cli import main
from cosim.trace import read_run
from models.backbone import outline_backbone
from models.data import load_splits

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"


def write_splits(root: Path, train: list[tuple[str, str]], dev: list[tuple[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev)):
        (root / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    return root


def test_label_names_are_numbered_over_both_splits(tmp_path):
    """A class missing from dev keeps its id; a class only in dev still gets one, and num_labels counts it."""
    root = write_splits(tmp_path, [("a", "neg"), ("b", "pos"), ("c", "neu")], [("d", "pos"), ("e", "neg")])
    train, dev = load_splits(str(root))
    assert train.label_names == dev.label_names == ("neg", "neu", "pos")
    assert train.labels.tolist() == [0, 2, 1] and dev.labels.tolist() == [2, 0]
    assert train.num_labels == dev.num_labels == 3
    root = write_splits(tmp_path / "more", [("a", "neg"), ("b", "pos")], [("c", "neu")])
    train, dev = load_splits(str(root))
    assert train.labels.tolist() == [0, 2] and dev.labels.tolist() == [1] and train.num_labels == 3


def test_integer_labels_take_num_labels_from_the_largest_id(tmp_path):
    train, dev = load_splits(str(write_splits(tmp_path, [("a", "0"), ("b", "1")], [("c", "4")])))
    assert train.label_names is None and train.num_labels == dev.num_labels == 5


def test_glue_pairs_keep_glue_ids():
    train, dev = load_splits("rte")
    assert train.num_labels == 2 and set(np.unique(dev.labels)) == {0, 1}


def test_outline_reads_no_weights():
    tiny = outline_backbone("tiny-bert")
    assert {"query", "key", "value", "dense"} <= tiny.linear_names and "LayerNorm" not in tiny.linear_names
    assert (tiny.modality, tiny.lora_width, tiny.max_positions, tiny.image_shape) == ("text", 32, 512, None)
    minilm = outline_backbone("minilm")
    assert (minilm.lora_width, minilm.max_positions) == (384, 512)
    vit = outline_backbone("tiny-vit")
    assert vit.modality == "image" and vit.image_shape == (1, 8, 8) and "q_proj" in vit.linear_names


def test_outline_explains_a_broken_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"containing config\.json"):
        outline_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        outline_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="neither BERT-family nor ViT"):
        outline_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32,
                                                      "num_attention_heads": 2}))
    with pytest.raises(ValueError, match="has no tokenizer"):
        outline_backbone(str(tmp_path))


def test_shipped_scenarios_pass_every_check(capsys):
    for path in [*sorted((ROOT / "scenarios").glob("*.toml")), TINY]:
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_image_data_needs_an_image_model(tmp_path, capsys):
    root = tmp_path / "digits"
    root.mkdir()
    for split in ("train", "dev"):
        np.savez(root / f"{split}.npz", images=np.zeros((8, 8, 8), np.uint8), labels=np.arange(8) % 3)
    assert main(["validate", str(TINY), "--set", f"learning.dataset={json.dumps(str(root))}",
                 "--set", "learning.clients=2", "--set", "learning.samples_per_client=2"]) == 2
    assert "learning.model: tiny-bert is a text model but" in capsys.readouterr().err


@pytest.mark.parametrize("scenario", [TINY, ROOT / "scenarios" / "seed001-static.toml"], ids=["flat", "split"])
def test_three_classes_train_and_evaluate_end_to_end(scenario, tmp_path):
    """Issue 16: a three-class dataset crashed at the first evaluation (num_labels = 2 was hard-coded)."""
    words = {"neg": "awful bad", "neu": "plain okay", "pos": "great fine"}
    rows = [(f"{words[label]} {i}", label) for i in range(16) for label in sorted(words)]
    root = write_splits(tmp_path / "three", rows[:36], rows[36:])
    overrides = [f"learning.dataset={json.dumps(str(root))}", 'learning.model="tiny-bert"',
                 'mobility.source="static-disk"', "mobility.disk.devices=6", "learning.clients=6",
                 "learning.samples_per_client=6", "learning.eval_every=1", "simulation.rounds=2"]
    argv = ["run", str(scenario), "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv + [item for override in overrides for item in ("--set", override)]) == 0
    run = read_run(tmp_path / "run")
    assert run["rounds"]["accuracy"].notna().all() and run["rounds"]["loss"].notna().all()
    assert run["manifest"]["majority_rate"] == pytest.approx(1 / 3)
