"""Classification data: the shipped GLUE tasks (SST-2 sentences; MRPC, QNLI, RTE sentence pairs), any GLUE-style
TSV / CSV / parquet table, image folders and .npz image arrays; tokenisation to fixed-length tensors (cached on disk
by content); IID / Dirichlet non-IID partitions of the samples over vehicles."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mobility.netgen import default_cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATASETS = Path(__file__).parent / "datasets"
SHIPPED = {
    name: {split: DATASETS / name / f"{split}.tsv.gz" for split in ("train", "dev")} for name in ("sst2", "mrpc", "rte")
}
# The official QNLI train split does not ship: its dev file is split reproducibly, 80 % train, 20 % dev.
SHIPPED["qnli"] = {"train": DATASETS / "qnli" / "dev.tsv.gz", "dev": DATASETS / "qnli" / "dev.tsv.gz"}
CARVED_TRAIN_FRACTION = {"qnli": 0.8}
# Text columns in order of preference: pairs (GLUE RTE / QNLI / MRPC / QQP names), then single sentences.
TEXT_COLUMNS = (
    ("sentence1", "sentence2"), ("question", "sentence"), ("#1 String", "#2 String"), ("question1", "question2"),
    ("sentence", None), ("text", None),
)
LABEL_COLUMNS = ("label", "Quality")
GLUE_LABEL_NAMES = ("entailment", "not_entailment")  # GLUE's convention: sorted names, entailment = 0
TABLE_SUFFIXES = (".tsv", ".tsv.gz", ".csv", ".csv.gz", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_DIRICHLET_TRIES = 1000
MAX_LABELS = 10_000  # the head is hidden_size × num_labels: a stray id like 10**9 must not allocate it


@dataclass(frozen=True)
class TextClassificationData:
    """Raw sentences (and, for pair tasks, their second sentences) with integer labels in [0, num_labels);
    `label_names[i]` names label i where the file gave names rather than integers."""

    texts: list[str]
    labels: np.ndarray
    num_labels: int
    pairs: list[str] | None = None
    label_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ImageClassificationData:
    """Images (N, C, H, W) float32 with integer labels in [0, num_labels); `label_names` as for text."""

    images: np.ndarray
    labels: np.ndarray
    num_labels: int
    label_names: tuple[str, ...] | None = None


Dataset = TextClassificationData | ImageClassificationData


@dataclass(frozen=True)
class EncodedData:
    """Samples as tensors ready to index by mini-batch: token ids padded to one length with their 0/1 mask, or
    (for images) pixels (N, C, H, W) in input_ids with an (N, 1) mask of ones."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_dataset(name: str, split: str) -> Dataset:
    """A shipped task ('sst2', 'mrpc', 'qnli', 'rte'; splits 'train' / 'dev'), a file (TSV / CSV / parquet table,
    gzip or plain, or an .npz of images; split is then ignored), or a directory holding `{split}.<ext>` or a
    `{split}/` folder of class subfolders of images."""
    if name in SHIPPED:
        if split not in SHIPPED[name]:
            raise ValueError(f"split {split!r} of dataset {name!r} does not exist; use one of {sorted(SHIPPED[name])}")
        data = _read_table(SHIPPED[name][split])
        if name in CARVED_TRAIN_FRACTION:
            order = np.random.default_rng(0).permutation(len(data.labels))
            cut = int(CARVED_TRAIN_FRACTION[name] * len(order))
            data = subset(data, np.sort(order[:cut] if split == "train" else order[cut:]))
        return replace(data, num_labels=2)
    path = Path(name)
    if path.is_dir():
        candidates = [path / f"{split}{suffix}" for suffix in (*TABLE_SUFFIXES, ".npz")] + [path / split]
        found = [candidate for candidate in candidates if candidate.exists()]
        if not found:
            raise ValueError(
                f"dataset directory {path} has no {split} split: expected one of "
                f"{', '.join(candidate.name for candidate in candidates)}"
            )
        path = found[0]
        if path.is_dir():
            return _read_image_folder(path)
    elif not path.is_file():
        raise ValueError(
            f"dataset {name!r}: not a shipped dataset ({sorted(SHIPPED)}) and no such file or directory; give a "
            f"GLUE-style table (sentence,label or sentence1,sentence2,label), an .npz of images or an image folder"
        )
    return _read_npz(path) if path.suffix == ".npz" else _read_table(path)


def load_splits(name: str) -> tuple[Dataset, Dataset]:
    """Train and dev splits of `name` (as load_dataset) sharing one label vocabulary: names are numbered over both
    splits, so a class missing from one split keeps its id, and num_labels covers both."""
    train, dev = load_dataset(name, "train"), load_dataset(name, "dev")
    if (train.label_names is None) != (dev.label_names is None):
        raise ValueError(f"dataset {name}: labels are integers in one split and names in the other; use one kind")
    if train.label_names is not None and train.label_names != dev.label_names:
        names = _label_order(set(train.label_names) | set(dev.label_names))
        train, dev = _renamed(train, names), _renamed(dev, names)
    num_labels = max(train.num_labels, dev.num_labels)
    return replace(train, num_labels=num_labels), replace(dev, num_labels=num_labels)


def _renamed(data: Dataset, names: list[str]) -> Dataset:
    assert data.label_names is not None
    ids = np.array([names.index(name) for name in data.label_names], dtype=np.int64)
    return replace(data, labels=ids[data.labels], label_names=tuple(names), num_labels=max(len(names), 2))


def _label_order(names: set[str]) -> list[str]:
    """Sorted, except GLUE's entailment / not_entailment, which keep GLUE's ids."""
    return list(GLUE_LABEL_NAMES) if names <= set(GLUE_LABEL_NAMES) else sorted(names)


def _read_table(path: Path) -> TextClassificationData:
    """A GLUE-style table with a header row; text and label columns found by their GLUE names."""
    if not path.name.endswith(TABLE_SUFFIXES):
        raise ValueError(f"{path}: unknown table format; use one of {', '.join(TABLE_SUFFIXES)} or .npz")
    frame = _read_frame(path)
    columns = set(frame.columns)
    text = next(((a, b) for a, b in TEXT_COLUMNS if a in columns and (b is None or b in columns)), None)
    label = next((column for column in LABEL_COLUMNS if column in columns), None)
    if text is None or label is None:
        raise ValueError(
            f"{path}: needs a header row with columns sentence and label (or sentence1,sentence2 / question,sentence "
            f"/ #1 String,#2 String for pairs), found {list(frame.columns)}"
        )
    labels, num_labels, names = _label_ids(frame[label], path)
    first, second = text
    pairs = None if second is None else frame[second].str.strip().tolist()
    return TextClassificationData(frame[first].str.strip().tolist(), labels, num_labels, pairs, names)


def _read_frame(path: Path) -> pd.DataFrame:
    """The table as strings, or a one-line ValueError saying why the file cannot be read."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path).astype(str)
        # QUOTE_NONE for TSV: GLUE sentences contain bare quote characters that are text, not quoting. utf-8-sig
        # drops MRPC's byte-order mark.
        tsv = ".tsv" in path.suffixes
        return pd.read_csv(path, sep="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
                           keep_default_na=False, dtype=str, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; it needs a header row and one row per sample") from None
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # pandas' ParserError and pyarrow's errors too
        raise ValueError(f"{path}: cannot be read as a {''.join(path.suffixes[-2:])} table ({_reason(exc)}); fix or "
                         f"re-export the file") from None


def _reason(exc: BaseException) -> str:
    """A reader's error message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _label_ids(column: pd.Series, path: Path) -> tuple[np.ndarray, int, tuple[str, ...] | None]:
    """Integer labels as they are; label names mapped to ids in sorted order (GLUE's entailment = 0), and returned."""
    numbers = pd.to_numeric(column, errors="coerce")
    if not numbers.isna().any():
        bad = (numbers < 0) | (numbers % 1 != 0) | (numbers >= MAX_LABELS)
        if bad.any():
            raise ValueError(f"{path}: column {column.name} must hold non-negative integers below {MAX_LABELS} or "
                             f"names, got {column[bad].iloc[0]!r}")
        labels = numbers.to_numpy(dtype=np.int64)
        return labels, max(int(labels.max(initial=0)) + 1, 2), None
    if (column.str.strip() == "").any():
        row = int(np.flatnonzero((column.str.strip() == "").to_numpy())[0]) + 1
        raise ValueError(f"{path}: column {column.name} has empty labels (first in data row {row}); every row needs a "
                         f"label")
    names = _label_order(set(column))
    if len(names) > MAX_LABELS:
        raise ValueError(f"{path}: column {column.name} has {len(names)} distinct labels, more than {MAX_LABELS}; "
                         f"is it the label column?")
    ids = {name: index for index, name in enumerate(names)}
    return column.map(ids).to_numpy(dtype=np.int64), max(len(names), 2), tuple(names)


def _read_npz(path: Path) -> ImageClassificationData:
    try:
        with np.load(path) as archive:  # a plain .npy array is no context manager: TypeError
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({_reason(exc)}); save it with "
                         f"numpy.savez(path, images=..., labels=...)") from None
    if not {"images", "labels"} <= set(arrays):
        raise ValueError(f"{path}: an image .npz needs arrays 'images' (N, H, W[, C]) and 'labels' (N,), "
                         f"found {sorted(arrays)}")
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim not in (3, 4) or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(f"{path}: 'images' must be (N, H, W) or (N, H, W, C) and 'labels' (N,) with the same N; got "
                         f"{images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError(f"{path}: 'labels' must hold non-negative integers")
    labels = labels.astype(np.int64)
    return ImageClassificationData(_channels_first(images), labels, max(int(labels.max(initial=0)) + 1, 2))


def _read_image_folder(root: Path) -> ImageClassificationData:
    """root/<class name>/*.png: one class per subfolder, labels in sorted class-name order."""
    from PIL import Image

    classes = sorted(child for child in root.iterdir() if child.is_dir())
    files = [(label, file) for label, folder in enumerate(classes) for file in sorted(folder.iterdir())
             if file.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise ValueError(f"{root}: an image folder needs at least two class subfolders holding "
                         f"{'/'.join(IMAGE_SUFFIXES)} images")
    images = []
    for _, file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image))
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise ValueError(f"{file}: not a readable image ({_reason(exc)}); replace or remove it") from None
        if images[-1].shape != images[0].shape:
            raise ValueError(f"{file}: shape {images[-1].shape} differs from {files[0][1]}'s {images[0].shape}; "
                             f"resize the images to one size")
    labels = np.array([label for label, _ in files], dtype=np.int64)
    return ImageClassificationData(_channels_first(np.stack(images)), labels, len(classes),
                                   tuple(folder.name for folder in classes))


def _channels_first(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) -> (N, C, H, W) float32; 8-bit pixels scaled to [0, 1]."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    images = images[..., None] if images.ndim == 3 else images
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(scale)


def subset(data: Dataset, indices: Sequence[int] | np.ndarray) -> Dataset:
    """The samples at `indices`, in that order, keeping num_labels (a shard may miss classes)."""
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(data, ImageClassificationData):
        return replace(data, images=data.images[indices], labels=data.labels[indices])
    pairs = None if data.pairs is None else [data.pairs[i] for i in indices]
    return replace(data, texts=[data.texts[i] for i in indices], labels=data.labels[indices], pairs=pairs)


def encode(data: Dataset, tokenizer: PreTrainedTokenizerBase | None, max_length: int) -> EncodedData:
    """Tokenise once, padded / truncated to `max_length` (pairs as tokenizer(text_a, text_b)), so every mini-batch
    is a cheap index into tensors. Token ids are cached under the cosim cache directory, keyed by the tokenizer's
    content, the texts and max_length. Images need no tokenizer: pixels become input_ids, the mask is ones."""
    labels = torch.tensor(data.labels, dtype=torch.int64)
    if isinstance(data, ImageClassificationData):
        return EncodedData(torch.from_numpy(data.images), torch.ones(len(labels), 1, dtype=torch.int64), labels)
    if tokenizer is None:
        raise ValueError("encode: text data needs the tokenizer that load_backbone returned with a text backbone")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
    path = default_cache_dir() / "tokens" / f"{_token_key(data, tokenizer, max_length)}.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
    else:
        batch = tokenizer(data.texts, data.pairs, padding="max_length", truncation=True, max_length=max_length,
                          return_tensors="pt")
        cached = {"input_ids": batch["input_ids"].to(torch.int32), "attention_mask": batch["attention_mask"].bool()}
        _save_atomic(cached, path)
    return EncodedData(cached["input_ids"].to(torch.int64), cached["attention_mask"].to(torch.int64), labels)


def _token_key(data: TextClassificationData, tokenizer: PreTrainedTokenizerBase, max_length: int) -> str:
    """Content hash of what tokenisation depends on: the tokenizer's full definition (vocabulary, normaliser,
    special tokens), the texts and max_length."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    else:  # the padding / truncation state that the last call left behind is not part of the definition
        fields = json.loads(backend.to_str())
        definition = json.dumps({key: value for key, value in fields.items() if key not in ("padding", "truncation")})
    settings = [type(tokenizer).__name__, tokenizer.padding_side, tokenizer.truncation_side, max_length]
    digest.update(json.dumps(settings).encode() + definition.encode())
    for field in (data.texts, data.pairs or []):
        digest.update(b"\x1d" + "\x1e".join(field).encode())
    return digest.hexdigest()[:32]


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: a concurrent or interrupted run never reads half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save(tensors, handle)
    os.replace(handle.name, path)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no row in the batch uses: SST-2 sentences average ~13 tokens, so a batch padded to
    64 costs several times the compute it needs. Logits are unchanged since padded positions are masked out.
    Images (pixels, more than 2 dims) have no padding and pass through."""
    if input_ids.dim() != 2:
        return input_ids, attention_mask
    width = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :width], attention_mask[:, :width]


def _check_clients(num_samples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_samples < num_clients:
        raise ValueError(f"num_samples ({num_samples}) must be >= num_clients ({num_clients}) so no shard is empty")


def client_shards(labels: np.ndarray, clients: int, samples_per_client: int, partition: str, alpha: float,
                  seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The training samples the clients get (indices into `labels`, drawn at random) and each client's shard of them
    (indices into that draw), IID or Dirichlet(alpha); reproducible from `seed`, so a check before the run sees the
    run's own draw. ValueError when there are too few samples or no Dirichlet draw fills every shard."""
    wanted = clients * samples_per_client
    if wanted > len(labels):
        raise ValueError(f"clients × samples_per_client = {wanted} exceeds the {len(labels)} training samples; "
                         f"lower either")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(labels))[:wanted]
    if partition == "iid":
        return chosen, partition_iid(wanted, clients, rng)
    return chosen, partition_dirichlet(labels[chosen], clients, alpha, rng)


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
