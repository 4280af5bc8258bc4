"""SOFT: component selection, the sparse merge, honest bits, the orthogonality regulariser, the offline preset and
the compression config's errors."""

import numpy as np
import pytest
import torch

from cosim.federation.learning import adapter_payload
from cosim.scenario import ScenarioError, parse_scenario
from models.aggregate import fedavg
from models.backbone import load_backbone
from models.lora import add_lora, rank_profile, resize_state, trainable_state
from models.soft import (
    OfflinePreset,
    add_orthogonal_gradient,
    component_scores,
    lora_pairs,
    orthogonal_gradient,
    orthogonal_penalty,
    select_components,
    sparse_merge,
    sparsify,
)
from models.trainer import ClientUpdate, LocalTrainer
from tests.test_models_training import _setup


def _state(rank=8, seed=0):
    model, _ = load_backbone("tiny-bert", 2, seed=seed)
    state = trainable_state(add_lora(model, rank=rank, alpha=16.0, dropout=0.0, target_modules=["query", "value"]))
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(value.shape, generator=generator) for name, value in state.items()}  # B ≠ 0


def test_scores_are_the_norms_of_each_components_update_and_selection_keeps_the_highest():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 10, generator=generator), torch.randn(7, 6, generator=generator)
    scores = component_scores(a, b)
    by_hand = torch.stack([torch.linalg.matrix_norm(torch.outer(b[:, i], a[i])) for i in range(6)])
    torch.testing.assert_close(scores, by_hand)
    rng = np.random.default_rng(0)
    for kept in range(1, 7):
        chosen = select_components(scores, kept, "norm", rng)
        assert chosen.tolist() == sorted(torch.argsort(by_hand, descending=True)[:kept].tolist())
    with pytest.raises(ValueError, match="kept"):
        select_components(scores, 7, "norm", rng)


def test_random_selection_draws_distinct_components_from_its_stream():
    scores = torch.arange(8.0)
    draws = {tuple(select_components(scores, 3, "random", np.random.default_rng(seed)).tolist()) for seed in range(20)}
    assert all(len(set(d)) == 3 and list(d) == sorted(d) for d in draws) and len(draws) > 5
    again = select_components(scores, 3, "random", np.random.default_rng(4))
    assert torch.equal(again, select_components(scores, 3, "random", np.random.default_rng(4)))


def test_sparse_merge_equals_fedavg_when_everyone_sends_everything():
    updates = [ClientUpdate(k, _state(seed=k), num_samples=10 * (k + 1), loss=0.0) for k in range(3)]
    uploads = [sparsify(u.client, u.num_samples, u.state, 8, "norm", np.random.default_rng(0)) for u in updates]
    merged = sparse_merge(_state(seed=9), uploads)
    dense = fedavg(updates)
    assert list(merged) == list(dense)
    for name in dense:
        torch.testing.assert_close(merged[name], dense[name], rtol=1e-6, atol=1e-7)


def test_a_component_is_averaged_over_its_senders_and_kept_where_nobody_sent_it():
    global_state = _state(seed=5)
    states = [_state(seed=1), _state(seed=2)]
    samples = (1, 3)
    uploads = [sparsify(k, samples[k], state, 3, "norm", np.random.default_rng(0)) for k, state in enumerate(states)]
    merged = sparse_merge(global_state, uploads)
    for a_name, b_name in lora_pairs(global_state):
        sent = [set(u.indices[a_name].tolist()) for u in uploads]
        for i in range(8):
            senders = [k for k in range(2) if i in sent[k]]
            if not senders:
                expected_a, expected_b = global_state[a_name][i], global_state[b_name][:, i]
            else:
                total = sum(samples[k] for k in senders)
                expected_a = sum(samples[k] * states[k][a_name][i].double() for k in senders) / total
                expected_b = sum(samples[k] * states[k][b_name][:, i].double() for k in senders) / total
            torch.testing.assert_close(merged[a_name][i], expected_a.float())
            torch.testing.assert_close(merged[b_name][:, i], expected_b.float())
    head = [name for name in global_state if name.startswith("head.")]
    for name in head:  # the head is always sent whole and averaged by samples
        torch.testing.assert_close(merged[name], (states[0][name] + 3 * states[1][name]) / 4)


@pytest.mark.parametrize("wire_bits", [32, 16])
def test_payload_bits_equal_the_sparse_upload_the_client_builds(wire_bits):
    state = _state(rank=8)
    payload = adapter_payload(rank_profile(state), wire_bits)
    for rank in (1, 3, 8):
        for density in (0.01, 0.3, 0.5, 0.9, 1.0):
            kept = int(payload.kept_components(rank, density))
            upload = sparsify(0, 1, resize_state(state, rank), kept, "norm", np.random.default_rng(0))
            assert upload.wire_bits(wire_bits) == payload.upload_bits(rank, density), (rank, density)
            assert all(len(index) == kept for index in upload.indices.values())


def test_orthogonal_gradient_equals_autograd_and_leaves_padding_at_zero():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 12, generator=generator, requires_grad=True)
    b = torch.randn(3, 9, 5, generator=generator, requires_grad=True)
    orthogonal_penalty(a, b).sum().backward()
    grad_a, grad_b = orthogonal_gradient(a.detach(), b.detach())
    torch.testing.assert_close(grad_a, a.grad)
    torch.testing.assert_close(grad_b, b.grad)
    params = {"x.lora_A.default.weight": a.detach().clone(), "x.lora_B.default.weight": b.detach().clone()}
    params["x.lora_A.default.weight"][0, 3:] = 0  # client 0 at rank 3, zero-padded to 5
    params["x.lora_B.default.weight"][0, :, 3:] = 0
    add_orthogonal_gradient(params, 0.5)
    assert not params["x.lora_A.default.weight"].grad[0, 3:].any()
    assert not params["x.lora_B.default.weight"].grad[0, :, 3:].any()


def test_regulariser_decorrelates_the_trained_components():
    model, data, shards = _setup(n=16, clients=2, rank=4)
    start = trainable_state(model)

    def penalty(weight):
        trainer = LocalTrainer(model, data, shards, batch_size=8, lr=0.05, optimizer="adamw", seed=0,
                               orthogonal_weight=weight)
        state = trainer.train(start, [0], steps=4, round_index=0)[0].state
        return sum(float(orthogonal_penalty(state[a], state[b])) for a, b in lora_pairs(state))

    assert penalty(10.0) < 0.5 * penalty(0.0)


def test_offline_preset_reads_density_and_sgd_step_off_the_spectrum():
    rng = np.random.default_rng(0)
    isotropic = torch.as_tensor(rng.standard_normal((4000, 16)))
    flat = OfflinePreset.from_features(isotropic, rank=8, lr=10.0, sgd=True)
    assert flat.density > 0.95 and flat.effective_rank == pytest.approx(8, rel=0.05)
    assert flat.lr == pytest.approx(2 / flat.second_moment_max) and flat.second_moment_max == pytest.approx(1, rel=0.2)
    scales = torch.tensor([10.0, 10.0] + [0.01] * 14)
    two = OfflinePreset.from_features(isotropic * scales, rank=8, lr=1e-3, sgd=False)
    assert two.effective_rank == pytest.approx(2, rel=0.05) and two.density == pytest.approx(0.25, rel=0.05)
    assert two.lr == 1e-3  # AdamW keeps its rate


def test_compression_config_errors_name_the_field():
    with pytest.raises(ScenarioError, match=r"learning\.compression\.density: must be > 0"):
        parse_scenario({"learning": {"compression": {"density": 0.0}}})
    with pytest.raises(ScenarioError, match=r"learning\.compression\.density: must be <= 1"):
        parse_scenario({"learning": {"compression": {"density": 1.5}}})
    with pytest.raises(ScenarioError, match="compression is not used when mode = 'split'"):
        parse_scenario({"learning": {"mode": "split", "compression": {"density": 0.5}}})
    with pytest.raises(ScenarioError, match=r"set learning\.mode = 'flat'"):
        parse_scenario({"learning": {"mode": "split"}, "scheduler": {"name": "tsfa"}})
    config = parse_scenario({"learning": {"compression": {"density": 0.5, "selection": "random"}}}).learning
    assert config.compression.density == 0.5 and config.compression.selection == "random"


def test_a_rank_above_the_models_width_is_a_one_line_error():
    from cosim.federation.learning import LearningSetup

    config = parse_scenario({"learning": {"model": "tiny-bert", "lora_rank": 33, "clients": 2,
                                          "samples_per_client": 4}}).learning
    with pytest.raises(ScenarioError, match=r"learning\.lora_rank: 33 exceeds the model's width 32"):
        LearningSetup.load(config, seed=0)
