import pytest
import torch

from models.backbone import load_backbone
from models.lora import (
    add_lora,
    flatten_state,
    load_trainable_state,
    resize_state,
    state_num_values,
    state_rank,
    trainable_state,
    unflatten_state,
    upload_bits,
)


def _tiny(rank=4, seed=0, targets=("query", "value")):
    model, _ = load_backbone("tiny-bert", 2, seed=seed)
    return add_lora(model, rank=rank, alpha=2.0 * rank, dropout=0.0, target_modules=targets)


def test_only_lora_and_head_are_trainable():
    model = _tiny()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert trainable and frozen
    assert all(n.startswith("head.") or ".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {"head.classifier.weight", "head.classifier.bias"} <= set(trainable)
    assert any(n.startswith("embedding.") for n in frozen)
    assert any(n.endswith("attention.self.query.base_layer.weight") for n in frozen)
    # 2 layers x 2 targets x (A, B) + head weight and bias
    assert len(trainable) == 2 * 2 * 2 + 2


def test_lora_starts_as_identity_and_is_seeded():
    plain, tokenizer = load_backbone("tiny-bert", 2, seed=3)
    ids = tokenizer(["nice"], return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    plain.eval()
    with torch.no_grad():
        before = plain(ids, mask)
        after = add_lora(plain, rank=4, alpha=8, dropout=0.0, target_modules=["query"])(ids, mask)
    torch.testing.assert_close(before, after)  # B = 0 at init
    a, b = trainable_state(_tiny(seed=3)), trainable_state(_tiny(seed=3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainable_state_roundtrip():
    model = _tiny()
    state = trainable_state(model)
    assert list(state) == sorted(state)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" and not v.requires_grad for v in state.values())
    changed = {k: v + 0.5 for k, v in state.items()}
    load_trainable_state(model, changed)
    reloaded = trainable_state(model)
    assert all(torch.equal(reloaded[k], changed[k]) for k in state)
    changed[next(iter(changed))].zero_()  # the snapshot is a clone, not a view of the parameters
    assert not torch.equal(trainable_state(model)[next(iter(changed))], changed[next(iter(changed))])


def test_load_trainable_state_is_strict():
    model = _tiny()
    state = trainable_state(model)
    with pytest.raises(ValueError, match="missing"):
        load_trainable_state(model, dict(list(state.items())[1:]))
    with pytest.raises(ValueError, match="unexpected"):
        load_trainable_state(model, {**state, "encoder.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="rank"):
        load_trainable_state(model, trainable_state(_tiny(rank=8)))


def test_upload_bits_grows_with_rank():
    bits = [upload_bits(trainable_state(_tiny(rank=r))) for r in (1, 2, 4, 8)]
    assert bits == sorted(bits) and len(set(bits)) == 4
    state = trainable_state(_tiny(rank=2))
    # rank r on query and value of 2 layers (hidden 32): 2 x 2 x (r x 32 + 32 x r) values, plus the head 32 x 2 + 2
    assert state_num_values(state) == 2 * 2 * (2 * 32 * 2) + 66
    assert upload_bits(state, bits_per_value=16) == 16 * state_num_values(state)
    with pytest.raises(ValueError, match="bits_per_value"):
        upload_bits(state, bits_per_value=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": 0.0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": ["qkv"]}, "target_modules"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_add_lora_validates(kwargs, field):
    model, _ = load_backbone("tiny-bert", 2, seed=0)
    args = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["query"], **kwargs}
    with pytest.raises(ValueError, match=field):
        add_lora(model, **args)


def test_resize_state_truncates_and_zero_pads():
    state = trainable_state(_tiny(rank=4))
    state = {k: v + 1.0 for k, v in state.items()}  # B is 0 at init: make every entry non-zero
    small, large = resize_state(state, 2), resize_state(state, 6)
    assert (state_rank(small), state_rank(large)) == (2, 6)
    for name, value in state.items():
        if ".lora_A." in name:
            assert torch.equal(small[name], value[:2]) and torch.equal(large[name][:4], value)
            assert not large[name][4:].any()
        elif ".lora_B." in name:
            assert torch.equal(small[name], value[:, :2]) and torch.equal(large[name][:, :4], value)
            assert not large[name][:, 4:].any()
        else:
            assert torch.equal(small[name], value) and torch.equal(large[name], value)
    roundtrip = resize_state(large, 4)
    assert all(torch.equal(roundtrip[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="rank"):
        resize_state(state, 0)
    with pytest.raises(ValueError, match="ranks"):
        state_rank({**small, "x.lora_A.default.weight": torch.zeros(3, 2)})


def test_flatten_roundtrip_and_size():
    state = {k: v + 0.25 for k, v in trainable_state(_tiny(rank=2)).items()}
    flat = flatten_state(state)
    assert flat.shape == (state_num_values(state),) and flat.dtype == torch.float32
    back = unflatten_state(flat, state)
    assert list(back) == sorted(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="1-D"):
        unflatten_state(flat[:-1], state)


def test_lora_on_vit():
    model, _ = load_backbone("tiny-vit", 3, seed=0)
    add_lora(model, rank=2, alpha=4.0, dropout=0.0, target_modules=["q_proj", "v_proj"])
    state = trainable_state(model)
    assert state_rank(state) == 2 and len(state) == 2 * 2 * 2 + 2
