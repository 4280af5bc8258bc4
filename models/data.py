"""Text-classification data: the shipped SST-2 (or any GLUE-style TSV), tokenisation to fixed-length tensors, and
IID / Dirichlet non-IID partitions of the samples over vehicles."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATASETS = Path(__file__).parent / "datasets"
SHIPPED = {"sst2": {"train": DATASETS / "sst2" / "train.tsv.gz", "dev": DATASETS / "sst2" / "dev.tsv.gz"}}
MAX_DIRICHLET_TRIES = 1000


@dataclass(frozen=True)
class TextClassificationData:
    """Raw sentences with integer labels in [0, num_labels)."""

    texts: list[str]
    labels: np.ndarray
    num_labels: int


@dataclass(frozen=True)
class EncodedData:
    """Tokenised samples padded to one length, ready to index by mini-batch."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_dataset(name: str, split: str) -> TextClassificationData:
    """'sst2' (shipped, splits 'train' / 'dev'), or a path to a GLUE-style TSV with a header row and columns
    sentence, label (gzip or plain; split is then ignored)."""
    if name in SHIPPED:
        if split not in SHIPPED[name]:
            raise ValueError(f"split {split!r} of dataset {name!r} does not exist; use one of {sorted(SHIPPED[name])}")
        path = SHIPPED[name][split]
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"dataset {name!r}: not a shipped dataset ({sorted(SHIPPED)}) and no such file; "
                f"give a GLUE-style TSV with columns sentence,label"
            )
    # QUOTE_NONE: GLUE sentences contain bare quote characters that are text, not CSV quoting.
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype={"sentence": str})
    if not {"sentence", "label"} <= set(frame.columns):
        raise ValueError(f"{path}: needs a header row with columns sentence and label, found {list(frame.columns)}")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any() or (labels < 0).any() or (labels % 1 != 0).any():
        raise ValueError(f"{path}: column label must hold non-negative integers (0, 1, ...)")
    labels = labels.to_numpy(dtype=np.int64)
    num_labels = 2 if name in SHIPPED else max(int(labels.max(initial=0)) + 1, 2)
    return TextClassificationData(frame["sentence"].str.strip().tolist(), labels, num_labels)


def subset(data: TextClassificationData, indices: Sequence[int] | np.ndarray) -> TextClassificationData:
    """The samples at `indices`, in that order, keeping num_labels (a shard may miss classes)."""
    indices = np.asarray(indices, dtype=np.int64)
    return TextClassificationData([data.texts[i] for i in indices], data.labels[indices], data.num_labels)


def encode(data: TextClassificationData, tokenizer: PreTrainedTokenizerBase, max_length: int) -> EncodedData:
    """Tokenise once, padded / truncated to `max_length`, so every mini-batch is a cheap index into tensors."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
    batch = tokenizer(data.texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return EncodedData(
        input_ids=batch["input_ids"].to(torch.int64),
        attention_mask=batch["attention_mask"].to(torch.int64),
        labels=torch.tensor(data.labels, dtype=torch.int64),
    )


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no row in the batch uses: SST-2 sentences average ~13 tokens, so a batch padded to
    64 costs several times the compute it needs. Logits are unchanged since padded positions are masked out."""
    width = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :width], attention_mask[:, :width]


def _check_clients(num_samples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_samples < num_clients:
        raise ValueError(f"num_samples ({num_samples}) must be >= num_clients ({num_clients}) so no shard is empty")


def partition_iid(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation cut into near-equal shards (sizes differ by at most one); each shard sorted."""
    _check_clients(num_samples, num_clients)
    return [np.sort(shard) for shard in np.array_split(rng.permutation(num_samples), num_clients)]


def partition_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_size: int = 1
) -> list[np.ndarray]:
    """Label-skewed shards: each class is split over clients in Dirichlet(alpha) proportions (small alpha = few
    classes per client). Redrawn until every shard has at least `min_size` samples; each shard sorted."""
    labels = np.asarray(labels)
    _check_clients(len(labels), num_clients)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (smaller = more skewed), got {alpha}")
    if min_size * num_clients > len(labels):
        raise ValueError(f"min_size ({min_size}) x num_clients ({num_clients}) exceeds the {len(labels)} samples")
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(MAX_DIRICHLET_TRIES):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for members in by_class:
            shuffled = rng.permutation(members)
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(members)).astype(np.int64)
            for client, part in enumerate(np.split(shuffled, cuts)):
                shards[client].append(part)
        result = [np.sort(np.concatenate(parts)) for parts in shards]
        if min(len(shard) for shard in result) >= min_size:
            return result
    raise ValueError(
        f"partition_dirichlet: no draw in {MAX_DIRICHLET_TRIES} gave every client >= {min_size} samples; "
        f"raise alpha ({alpha}), lower min_size or use fewer clients ({num_clients})"
    )
