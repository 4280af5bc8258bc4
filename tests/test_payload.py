"""Bits on the air as functions of the plan: by hand for both modes, against the serialised adapter, and the
phases a participant runs carry exactly the payload's bits."""

import numpy as np
import pytest

from cosim.federation.learning import adapter_payload, split_payload
from cosim.federation.task import Task
from cosim.scenario import parse_scenario
from models.backbone import load_backbone
from models.lora import add_lora, rank_profile, resize_state, trainable_state, upload_bits
from models.split import SplitExchange


def _state(rank=8, targets=("query", "value")):
    model, _ = load_backbone("tiny-bert", 2, seed=0)
    return trainable_state(add_lora(model, rank=rank, alpha=16.0, dropout=0.0, target_modules=list(targets)))


@pytest.mark.parametrize("rank", [2, 4, 8, 16])
def test_split_payload_grows_with_the_rank_by_hand(rank):
    """MiniLM-sized exchange (b 16, ℓ 64, d 384, 6 layers × query/value): embeddings and features b·ℓ·d each, the
    gradient information b·ℓ·M·r; float32 on the air."""
    tokens, d, modules = 16 * 64, 384, 12
    payload = split_payload(SplitExchange(tokens, d, rank, modules), bits_per_value=32, reciprocal_downlink=True)
    tensor = tokens * d * 32
    gradient = tokens * modules * rank * 32
    assert payload.upload_bits() == tensor + gradient
    assert payload.download_bits() == tensor
    assert payload.scheduled_bits() == 2 * tensor + gradient  # the paper's L_k at the vehicle's rate
    upload_only = split_payload(SplitExchange(tokens, d, rank, modules), bits_per_value=16)
    assert upload_only.scheduled_bits() == (tensor + gradient) // 2  # bf16 on the air, download not planned
    assert [int(b) for b in payload.leg_bits()] == [tensor, tensor, gradient]
    with pytest.raises(ValueError, match="not offered"):
        payload.upload_bits(rank + 1)  # the server's one global rank


def test_adapter_payload_equals_the_serialised_adapter_at_every_rank():
    state = _state(rank=8)
    payload = adapter_payload(rank_profile(state), bits_per_value=32)
    assert payload.ranks == tuple(range(1, 9)) and payload.default_rank == 8
    for rank in (1, 3, 8):
        assert payload.upload_bits(rank) == upload_bits(resize_state(state, rank)) == payload.download_bits(rank)
    ranks = np.array([2, 4, 8])
    np.testing.assert_array_equal(payload.upload_bits(ranks), [upload_bits(resize_state(state, r)) for r in ranks])
    with pytest.raises(ValueError, match=r"ranks \[9\]"):
        payload.upload_bits(9)


def test_sparse_upload_keeps_rank_components_and_pays_a_bitmap():
    state = _state(rank=8)
    profile = rank_profile(state)
    payload = adapter_payload(profile, bits_per_value=32)
    kept = payload.kept_components(8, np.array([1.0, 0.5, 0.01]))
    np.testing.assert_array_equal(kept, [8, 4, 1])
    half = payload.upload_bits(8, 0.5)
    assert half == upload_bits(resize_state(state, 4)) + profile.adapted_modules * 8
    assert payload.download_bits(8) == upload_bits(state)  # the download stays dense
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density"):
            payload.upload_bits(8, bad)


def test_phases_carry_the_payloads_bits():
    class Probe(Task):
        round_shape = ("up", "down", "compute", "up")
        compute_samples = 8

        def train(self, clients, round_index, ranks, densities=None):
            return 0.0

        def evaluate(self):
            return 0.0, 0.0

    probe = Probe(parse_scenario({}).learning, majority_rate=0.5)
    probe.payload = split_payload(SplitExchange(100, 32, 4, 6), bits_per_value=32)
    phases = probe.phases(4)
    assert [p.kind for p in phases] == ["up", "down", "compute", "up"]
    assert sum(p.bits for p in phases if p.kind == "up") == probe.payload.upload_bits()
    assert sum(p.bits for p in phases if p.kind == "down") == probe.payload.download_bits()
