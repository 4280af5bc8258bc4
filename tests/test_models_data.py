import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from models.backbone import load_backbone
from models.data import (
    ImageClassificationData,
    encode,
    load_dataset,
    partition_dirichlet,
    partition_iid,
    subset,
    trim_padding,
)


def test_sst2_shipped_sizes_and_labels():
    train, dev = load_dataset("sst2", "train"), load_dataset("sst2", "dev")
    assert (len(train.texts), len(dev.texts)) == (67_349, 872)
    for data in (train, dev):
        assert data.num_labels == 2 and data.labels.dtype == np.int64
        assert set(np.unique(data.labels)) == {0, 1}
        assert all(isinstance(t, str) and t for t in data.texts[:100])
    with pytest.raises(ValueError, match="split"):
        load_dataset("sst2", "test")


def test_custom_tsv(tmp_path):
    path = tmp_path / "tiny.tsv"
    path.write_text('sentence\tlabel\nsays "hi"\t2\nno\t0\n')
    data = load_dataset(str(path), "train")
    assert data.texts == ['says "hi"', "no"] and data.labels.tolist() == [2, 0] and data.num_labels == 3
    picked = subset(data, [1])
    assert picked.texts == ["no"] and picked.num_labels == 3
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\ty\nx\t1\n")
    with pytest.raises(ValueError, match="sentence and label"):
        load_dataset(str(bad), "train")
    bad.write_text("sentence\tlabel\nx\t-1\n")
    with pytest.raises(ValueError, match="non-negative"):
        load_dataset(str(bad), "train")
    bad.write_text("sentence\tlabel\nx\tyes\ny\t\n")
    with pytest.raises(ValueError, match="empty labels"):
        load_dataset(str(bad), "train")
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(str(tmp_path / "missing.tsv"), "train")


@pytest.mark.parametrize(
    ("name", "sizes"), [("mrpc", (3_667, 408)), ("qnli", (4_370, 1_093)), ("rte", (2_490, 277))]
)
def test_shipped_pair_tasks(name, sizes):
    train, dev = load_dataset(name, "train"), load_dataset(name, "dev")
    assert (len(train.texts), len(dev.texts)) == sizes
    for data in (train, dev):
        assert data.num_labels == 2 and set(np.unique(data.labels)) == {0, 1}
        assert len(data.pairs) == len(data.texts) and all(a and b for a, b in zip(data.texts, data.pairs, strict=True))
    if name == "qnli":  # carved from one file: disjoint, reproducible
        assert not set(zip(train.texts, train.pairs, strict=True)) & set(zip(dev.texts, dev.pairs, strict=True))
        assert load_dataset("qnli", "dev").texts == dev.texts


def test_tables_in_every_format(tmp_path):
    frame = pd.DataFrame({"sentence1": ["a cat", "a dog", "rain"], "sentence2": ["a pet", "a pet", "sun"],
                          "label": ["entailment", "entailment", "not_entailment"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_parquet(tmp_path / "dev.parquet")
    (tmp_path / "single.tsv").write_text("question\tsentence\tlabel\nwho?\tme.\t1\n")
    for data in (load_dataset(str(tmp_path), "train"), load_dataset(str(tmp_path), "dev")):
        assert data.texts == ["a cat", "a dog", "rain"] and data.pairs == ["a pet", "a pet", "sun"]
        assert data.labels.tolist() == [0, 0, 1] and data.num_labels == 2
    single = load_dataset(str(tmp_path / "single.tsv"), "ignored")
    assert (single.texts, single.pairs, single.labels.tolist()) == (["who?"], ["me."], [1])
    with pytest.raises(ValueError, match="no test split"):
        load_dataset(str(tmp_path), "test")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown table format"):
        load_dataset(str(tmp_path / "notes.txt"), "train")


def test_pairs_encode_both_sentences_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COSIM_CACHE", str(tmp_path))
    _, tokenizer = load_backbone("tiny-bert", 2, seed=0)
    data = subset(load_dataset("rte", "dev"), range(6))
    enc = encode(data, tokenizer, max_length=48)
    expected = tokenizer(data.texts, data.pairs, padding="max_length", truncation=True, max_length=48,
                         return_tensors="pt")
    assert torch.equal(enc.input_ids, expected["input_ids"]) and torch.equal(enc.attention_mask,
                                                                            expected["attention_mask"])
    assert (enc.input_ids == tokenizer.sep_token_id).sum(dim=1).eq(2).all()  # [CLS] a [SEP] b [SEP]
    cached = list((tmp_path / "tokens").glob("*.pt"))
    assert len(cached) == 1
    again = encode(data, tokenizer, max_length=48)  # read back from the cache
    assert torch.equal(again.input_ids, enc.input_ids) and again.input_ids.dtype == torch.int64
    encode(data, tokenizer, max_length=32)
    encode(subset(data, range(5)), tokenizer, max_length=48)
    assert len(list((tmp_path / "tokens").glob("*.pt"))) == 3  # keyed by max_length and by the texts
    assert not list((tmp_path / "tokens").glob("*.tmp"))


def test_images_from_npz_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "digits.npz", images=pixels, labels=np.array([0, 1, 2, 0, 1, 2]))
    npz = load_dataset(str(tmp_path / "digits.npz"), "train")
    assert isinstance(npz, ImageClassificationData) and npz.images.shape == (6, 1, 8, 8) and npz.num_labels == 3
    np.testing.assert_allclose(npz.images[:, 0], pixels / 255.0, rtol=1e-6)
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(2):
            image = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
            image.save(tmp_path / "train" / name / f"{i}.png")
    folder = load_dataset(str(tmp_path), "train")
    assert folder.images.shape == (4, 3, 4, 5) and folder.labels.tolist() == [0, 0, 1, 1]
    enc = encode(subset(folder, [3, 0]), None, max_length=2)
    assert enc.input_ids.dtype == torch.float32 and enc.input_ids.shape == (2, 3, 4, 5)
    assert enc.attention_mask.tolist() == [[1], [1]] and enc.labels.tolist() == [1, 0]
    assert trim_padding(enc.input_ids, enc.attention_mask)[0].shape == (2, 3, 4, 5)  # pixels are never trimmed
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "train" / "dog" / "odd.png")
    with pytest.raises(ValueError, match=r"odd\.png"):
        load_dataset(str(tmp_path), "train")
    np.savez(tmp_path / "bad.npz", pixels=pixels)
    with pytest.raises(ValueError, match="'images'"):
        load_dataset(str(tmp_path / "bad.npz"), "train")


def test_encode_pads_and_truncates():
    _, tokenizer = load_backbone("tiny-bert", 2, seed=0)
    data = subset(load_dataset("sst2", "dev"), range(5))
    enc = encode(data, tokenizer, max_length=10)
    assert len(enc) == 5
    assert enc.input_ids.shape == enc.attention_mask.shape == (5, 10)
    assert enc.input_ids.dtype == enc.attention_mask.dtype == enc.labels.dtype == torch.int64
    assert enc.labels.tolist() == data.labels.tolist()
    with pytest.raises(ValueError, match="max_length"):
        encode(data, tokenizer, max_length=1)


def _assert_partition(shards, n):
    joined = np.concatenate(shards)
    assert len(joined) == n and len(np.unique(joined)) == n  # disjoint and covering


def test_partition_iid():
    shards = partition_iid(103, 10, np.random.default_rng(7))
    _assert_partition(shards, 103)
    assert {len(s) for s in shards} == {10, 11}
    again = partition_iid(103, 10, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    other = partition_iid(103, 10, np.random.default_rng(8))
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other, strict=True))
    with pytest.raises(ValueError, match="num_clients"):
        partition_iid(3, 4, np.random.default_rng(0))


def test_partition_dirichlet_reproducible_and_skewed():
    labels = np.repeat(np.arange(4), 500)
    skewed = partition_dirichlet(labels, 10, 0.05, np.random.default_rng(1), min_size=5)
    flat = partition_dirichlet(labels, 10, 1000.0, np.random.default_rng(1), min_size=5)
    for shards in (skewed, flat):
        _assert_partition(shards, len(labels))
        assert min(len(s) for s in shards) >= 5
    again = partition_dirichlet(labels, 10, 0.05, np.random.default_rng(1), min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))

    def dominant_share(shards):
        return np.mean([np.bincount(labels[s], minlength=4).max() / len(s) for s in shards])

    assert dominant_share(skewed) > 0.8
    assert dominant_share(flat) < 0.4


def test_partition_dirichlet_validates():
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(ValueError, match="alpha"):
        partition_dirichlet(labels, 2, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_size"):
        partition_dirichlet(labels, 2, 1.0, np.random.default_rng(0), min_size=6)
