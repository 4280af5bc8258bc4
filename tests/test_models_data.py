import numpy as np
import pytest
import torch

from models.backbone import load_backbone
from models.data import encode, load_dataset, partition_dirichlet, partition_iid, subset


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
    bad.write_text("sentence\tlabel\nx\tpositive\n")
    with pytest.raises(ValueError, match="label"):
        load_dataset(str(bad), "train")
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(str(tmp_path / "missing.tsv"), "train")


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
