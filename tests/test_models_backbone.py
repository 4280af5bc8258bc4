import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, ViTConfig, ViTModel

from models.backbone import TINY_BERT, TINY_VIT, SplitClassifier, load_backbone
from models.device import autocast, compute_dtype, native_bf16, pick_device


def _batch(tokenizer, texts, max_length):
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _features(model, ids, mask):
    """The encoder output, computed module by module the way split learning runs it."""
    hidden = model.embedding(input_ids=ids)
    return model.encoder(hidden, attention_mask=model.additive_mask(mask, hidden.dtype))[0]


def test_tiny_bert_split_shapes_and_composition():
    model, tokenizer = load_backbone("tiny-bert", 3, seed=0)
    model.eval()
    assert isinstance(model, SplitClassifier)
    assert model.config.hidden_size == 32 and len(model.encoder.layer) == 2
    ids, mask = _batch(tokenizer, ["a fine film", "dull"], 12)
    with torch.no_grad():
        logits = model(ids, mask)
        hidden = _features(model, ids, mask)
        assert hidden.shape == (2, 12, 32)
        by_parts = model.head(hidden, mask)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, by_parts, rtol=0, atol=0)


def test_padding_does_not_change_logits():
    model, tokenizer = load_backbone("tiny-bert", 2, seed=0)
    model.eval()
    with torch.no_grad():
        short = model(*_batch(tokenizer, ["the plot is thin"], 8))
        long = model(*_batch(tokenizer, ["the plot is thin"], 40))
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)


def test_same_seed_same_weights_other_seed_other_head():
    a, _ = load_backbone("tiny-bert", 2, seed=1)
    b, _ = load_backbone("tiny-bert", 2, seed=1)
    c, _ = load_backbone("tiny-bert", 2, seed=2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.classifier.weight, c.head.classifier.weight)


def test_local_checkpoint_directory(tmp_path):
    _, tokenizer = load_backbone("tiny-bert", 2, seed=0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_backbone(str(tmp_path), 2, seed=0)
    assert model.config.hidden_size == 32


def test_tiny_vit_split_shapes_and_composition():
    model, tokenizer = load_backbone("tiny-vit", 10, seed=0)
    model.eval()
    assert tokenizer is None and model.config.model_type == "vit"
    pixels, mask = torch.rand(3, 1, 8, 8), torch.ones(3, 1, dtype=torch.int64)
    with torch.no_grad():
        logits = model(pixels, mask)
        hidden = _features(model, pixels, mask)
        by_parts = model.head(hidden, mask)
    assert hidden.shape == (3, 17, 32)  # 16 patches of 2x2 plus [CLS]
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, by_parts, rtol=0, atol=0)
    torch.testing.assert_close(by_parts, model.head.classifier(hidden.mean(dim=1)))  # every token is real


def test_local_vit_checkpoint_directory(tmp_path):
    ViTModel(ViTConfig(**TINY_VIT)).save_pretrained(tmp_path / "vit")
    model, tokenizer = load_backbone(str(tmp_path / "vit"), 2, seed=0)
    assert tokenizer is None and model(torch.rand(2, 1, 8, 8), torch.ones(2, 1)).shape == (2, 2)
    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2)).save_pretrained(tmp_path / "gpt")
    with pytest.raises(ValueError, match="neither BERT-family nor ViT"):
        load_backbone(str(tmp_path / "gpt"), 2, seed=0)


@pytest.mark.parametrize("name", ["gpt-17", "/nonexistent/checkpoint"])
def test_unknown_backbone_raises(name):
    with pytest.raises(ValueError, match="backbone"):
        load_backbone(name, 2, seed=0)


def test_num_labels_validated():
    with pytest.raises(ValueError, match="num_labels"):
        load_backbone("tiny-bert", 1, seed=0)


def test_device_helpers():
    device = pick_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert compute_dtype(device, "auto") == (torch.bfloat16 if native_bf16(device) else torch.float32)
    for precision, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]:
        assert compute_dtype(device, precision) == dtype
        with autocast(device, dtype):
            out = nn.Linear(4, 2).to(device)(torch.ones(1, 4, device=device))
        assert out.dtype == dtype
    with pytest.raises(ValueError, match="precision must be one of"):
        compute_dtype(device, "fp8")


def test_real_minilm_weights_load_and_give_384d_features():
    model, tokenizer = load_backbone("minilm", 2, seed=0)
    model.eval()
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in _batch(tokenizer, ["a great movie", "an excellent film", "taxes rose"], 16))
    with torch.no_grad():
        hidden = _features(model, ids, mask)
        logits = model(ids, mask)
    assert hidden.shape == (3, 16, 384) and len(model.encoder.layer) == 6
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    # Pretrained sentence features, not random ones: paraphrases sit closer than unrelated sentences.
    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    cos = nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0) + 0.2
