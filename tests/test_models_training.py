import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.aggregate import fedavg, hetlora
from models.backbone import load_backbone
from models.data import ImageClassificationData, TextClassificationData, encode, partition_iid, trim_padding
from models.evaluate import evaluate
from models.lora import add_lora, load_trainable_state, resize_state, state_rank, trainable_state
from models.stacked import ClientRows
from models.trainer import ClientUpdate, LocalTrainer, batch_indices

GOOD = ["good", "great", "excellent", "wonderful", "superb", "lovely", "brilliant", "fine"]
BAD = ["bad", "awful", "terrible", "poor", "horrible", "dreadful", "boring", "weak"]
TEMPLATES = ["the movie was {}", "a {} film", "{} acting and a {} plot", "what a {} story", "simply {}"]


def _sentiment_task(n: int, seed: int = 0) -> TextClassificationData:
    """A tiny learnable task: the label is whether the sentence uses a positive or a negative word."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(*[rng.choice(GOOD if y else BAD)] * 2) for y in labels]
    return TextClassificationData(texts, labels.astype(np.int64), 2)


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.config.attention_probs_dropout_prob = 0.0  # ViT reads its attention dropout from the config


def _setup(n=64, clients=4, dropout=True, seed=0, rank=4):
    model, tokenizer = load_backbone("tiny-bert", 2, seed=seed)
    add_lora(model, rank=rank, alpha=2.0 * rank, dropout=0.1, target_modules=["query", "value"])
    if not dropout:
        _no_dropout(model)
    data = encode(_sentiment_task(n), tokenizer, max_length=12)
    shards = partition_iid(n, clients, np.random.default_rng(seed))
    return model, data, shards


def _equal_states(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _max_diff(a, b):
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _plain_loop(model, data, shards, start, clients, *, steps, round_index, batch_size, lr, optimizer, seed):
    """The reference: one deep copy of the model per client, trained alone with torch.optim on its own batches."""
    states = []
    for client in clients:
        batch_seq, _ = np.random.SeedSequence([seed, round_index, client]).spawn(2)
        batches = batch_indices(shards[client], batch_size, steps, np.random.default_rng(batch_seq))
        own = copy.deepcopy(model)
        load_trainable_state(own, start)
        params = [p for _, p in sorted(own.named_parameters()) if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.AdamW(params, lr=lr)
        own.train()
        for rows in batches:
            rows = torch.as_tensor(rows)
            loss = F.cross_entropy(own(*trim_padding(data.input_ids[rows], data.attention_mask[rows])),
                                   data.labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        states.append(trainable_state(own))
    return states


# Unequal shards, one smaller than the batch size: clients bring batches of different sizes.
UNEQUAL = [np.arange(0, 20), np.arange(20, 25), np.arange(25, 45), np.arange(45, 64)]


def test_same_seed_twice_gives_identical_updates():
    runs = []
    for _ in range(2):
        model, data, shards = _setup()
        trainer = LocalTrainer(model, data, shards, batch_size=8, lr=1e-2, seed=5)
        runs.append(trainer.train(trainable_state(model), [0, 1, 2, 3], steps=3, round_index=2))
    for a, b in zip(*runs, strict=True):
        assert a.client == b.client and a.loss == b.loss and a.num_samples == b.num_samples == 16
        assert _equal_states(a.state, b.state)


def test_client_result_independent_of_other_clients_and_order():
    model, data, _ = _setup()
    trainer = LocalTrainer(model, data, UNEQUAL, batch_size=8, lr=1e-2, seed=5)
    start = trainable_state(model)
    together = trainer.train(start, [3, 1, 0, 2], steps=3, round_index=1)  # dropout on: per-client streams
    assert [u.client for u in together] == [3, 1, 0, 2] and [u.num_samples for u in together] == [19, 5, 20, 20]
    for update in together:
        alone = trainer.train(start, [update.client], steps=3, round_index=1)[0]
        assert _max_diff(update.state, alone.state) <= 1e-6 and update.loss == pytest.approx(alone.loss, abs=1e-6)
    assert _max_diff(together[0].state, together[1].state) > 1e-3
    next_round = trainer.train(start, [2], steps=3, round_index=2)
    assert _max_diff(together[3].state, next_round[0].state) > 1e-4
    assert _equal_states(trainable_state(model), start)  # the shared model's own parameters are untouched


def test_passes_of_any_size_give_the_same_updates():
    model, data, _ = _setup()
    start = trainable_state(model)
    runs = {}
    for tokens in (1, 200, 10_000):  # a pass per client, two clients a pass (8 + 5 rows x 12 tokens), all at once
        trainer = LocalTrainer(model, data, UNEQUAL, batch_size=8, lr=1e-2, seed=5, tokens_per_pass=tokens)
        assert len(trainer._passes([0, 2, 3, 1], [0, 1, 2, 3])) == {1: 4, 200: 2, 10_000: 1}[tokens]
        runs[tokens] = trainer.train(start, [3, 1, 0, 2], steps=2, round_index=1)
    for one, two, all_ in zip(runs[1], runs[200], runs[10_000], strict=True):
        assert one.client == two.client == all_.client
        assert _max_diff(one.state, all_.state) <= 1e-6 and _max_diff(two.state, all_.state) <= 1e-6
    with pytest.raises(ValueError, match="tokens_per_pass must be >= 1"):
        LocalTrainer(model, data, UNEQUAL, batch_size=8, lr=1e-2, seed=5, tokens_per_pass=0)


def test_bf16_training_tracks_float32():
    """bf16 matrix products (the 'auto' precision on CPUs with AVX512-BF16 and on GPUs) move the adapters like
    float32 does, to bf16's ~3 significant digits (under SGD, whose step is linear in the gradient), and keep
    parameters and updates in float32."""
    model, data, _ = _setup(dropout=False)
    start = trainable_state(model)
    updates = {
        precision: LocalTrainer(model, data, UNEQUAL, batch_size=8, lr=0.5, optimizer="sgd", seed=5,
                                precision=precision).train(start, [0, 1, 2, 3], steps=3, round_index=0)
        for precision in ("float32", "bfloat16")
    }
    for exact, low in zip(updates["float32"], updates["bfloat16"], strict=True):
        assert all(value.dtype == torch.float32 for value in low.state.values())
        moved = _max_diff(exact.state, start)
        assert moved > 1e-3 and 0 < _max_diff(exact.state, low.state) < 0.1 * moved  # bf16 did run, and is close
        assert low.loss == pytest.approx(exact.loss, rel=0.02)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.5), ("adamw", 1e-2)])
def test_batched_equals_a_plain_loop_of_per_client_models(optimizer, lr):
    model, data, _ = _setup(dropout=False)
    generator = torch.Generator().manual_seed(1)
    start = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in trainable_state(model).items()}
    options = {"batch_size": 8, "lr": lr, "optimizer": optimizer, "seed": 3}
    trainer = LocalTrainer(model, data, UNEQUAL, **options)
    batched = trainer.train(start, [0, 1, 2, 3], steps=4, round_index=2)
    expected = _plain_loop(model, data, UNEQUAL, start, [0, 1, 2, 3], steps=4, round_index=2, **options)
    for update, reference in zip(batched, expected, strict=True):
        assert _max_diff(update.state, start) > 1e-3  # the steps did move
        assert _max_diff(update.state, reference) <= 1e-5


def test_heterogeneous_ranks_equal_per_client_models_at_their_rank(monkeypatch):
    model, data, _ = _setup(dropout=False, rank=4)
    generator = torch.Generator().manual_seed(2)
    start = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in trainable_state(model).items()}
    options = {"batch_size": 8, "lr": 1e-2, "optimizer": "adamw", "seed": 0}
    trainer = LocalTrainer(model, data, UNEQUAL, **options)
    stacked = []
    make_optimizer = trainer._optimizer
    monkeypatch.setattr(trainer, "_optimizer", lambda params: stacked.extend(params) or make_optimizer(params))
    ranks = [2, 1, 3, 2]  # below the global rank 4: padded to 3 in the batch
    updates = trainer.train(start, [0, 1, 2, 3], steps=3, round_index=0, ranks=ranks)
    assert [state_rank(u.state) for u in updates] == ranks
    order = [0, 2, 3, 1]  # stacking order: batch size 8 (clients 0, 2, 3) before 5 (client 1)
    for name, value in zip(sorted(start), stacked, strict=True):
        for slot, client in enumerate(order):
            if ".lora_A." in name:
                assert value.shape[1] == 3 and not value[slot, ranks[client] :].any()  # padding stays exactly 0
            elif ".lora_B." in name:
                assert value.shape[2] == 3 and not value[slot, :, ranks[client] :].any()
    for update, rank in zip(updates, ranks, strict=True):
        own, _ = load_backbone("tiny-bert", 2, seed=0)  # a peft model at the client's rank, same LoRA scaling 8 / 4
        add_lora(own, rank=rank, alpha=8.0 * rank / 4, dropout=0.0, target_modules=["query", "value"])
        _no_dropout(own)
        reference = _plain_loop(own, data, UNEQUAL, resize_state(start, rank), [update.client], steps=3,
                                round_index=0, **options)[0]
        assert _max_diff(update.state, reference) <= 1e-5
        alone = trainer.train(start, [update.client], steps=3, round_index=0, ranks=[rank])[0]
        assert _max_diff(update.state, alone.state) <= 1e-6


def test_hetlora_zero_pads_and_weights_by_samples():
    a = ClientUpdate(0, {"m.lora_A.x.weight": torch.ones(1, 2), "m.lora_B.x.weight": torch.ones(2, 1)}, 1, 0.0)
    b = ClientUpdate(1, {"m.lora_A.x.weight": torch.full((2, 2), 3.0), "m.lora_B.x.weight": torch.full((2, 2), 3.0)},
                     3, 0.0)
    merged = hetlora([a, b], rank=2)
    torch.testing.assert_close(merged["m.lora_A.x.weight"], torch.tensor([[2.5, 2.5], [2.25, 2.25]]))
    torch.testing.assert_close(merged["m.lora_B.x.weight"], torch.tensor([[2.5, 2.25], [2.5, 2.25]]))
    assert state_rank(hetlora([a], rank=3)) == 3
    with pytest.raises(ValueError, match="above rank 1"):
        hetlora([a, b], rank=1)


def test_tiny_vit_trains_batched_like_alone():
    model, _ = load_backbone("tiny-vit", 2, seed=0)
    add_lora(model, rank=2, alpha=4.0, dropout=0.1, target_modules=["q_proj", "v_proj"])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 48)
    images = rng.normal(0, 0.3, (48, 1, 8, 8)).astype(np.float32)
    images[:, 0, :4] += labels[:, None, None]  # the label lights up the top half
    data = encode(ImageClassificationData(images, labels, 2), None, max_length=2)
    assert data.input_ids.shape == (48, 1, 8, 8) and data.attention_mask.shape == (48, 1)
    shards = partition_iid(48, 3, np.random.default_rng(0))
    trainer = LocalTrainer(model, data, shards, batch_size=8, lr=3e-2, seed=0)
    start = trainable_state(model)
    together = trainer.train(start, [0, 1, 2], steps=2, round_index=0)
    alone = trainer.train(start, [1], steps=2, round_index=0)[0]
    assert _max_diff(together[1].state, alone.state) <= 1e-6
    state, losses = start, []
    for round_index in range(15):
        updates = trainer.train(state, [0, 1, 2], steps=2, round_index=round_index)
        state, losses = fedavg(updates), [*losses, np.mean([u.loss for u in updates])]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert evaluate(model, state, data)[0] >= 0.8


def test_training_reduces_loss_on_learnable_task():
    model, data, shards = _setup(n=128, clients=1)
    trainer = LocalTrainer(model, data, shards, batch_size=32, lr=3e-2, optimizer="adamw", seed=0)
    start = trainable_state(model)
    acc0, loss0 = evaluate(model, start, data)
    state = start
    for round_index in range(60):
        state = trainer.train(state, [0], steps=2, round_index=round_index)[0].state
    acc1, loss1 = evaluate(model, state, data)
    assert loss1 < 0.6 * loss0 and acc1 >= 0.8 > acc0


def test_fedavg_of_one_sgd_step_equals_one_centralised_step():
    clients, per_client = 4, 8
    model, data, shards = _setup(n=clients * per_client, clients=clients, dropout=False)
    generator = torch.Generator().manual_seed(0)
    # Non-zero B so that both A and B get gradients in the single step.
    start = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in trainable_state(model).items()}
    federated = LocalTrainer(model, data, shards, batch_size=per_client, lr=0.5, optimizer="sgd", seed=0)
    updates = federated.train(start, range(clients), steps=1, round_index=0)
    union = np.concatenate(shards)
    central = LocalTrainer(model, data, [union], batch_size=len(union), lr=0.5, optimizer="sgd", seed=0)
    expected = central.train(start, [0], steps=1, round_index=0)[0].state
    averaged = fedavg(updates)
    assert list(averaged) == list(expected)
    assert max(float((averaged[k] - start[k]).abs().max()) for k in start) > 1e-3  # the step did move
    assert max(float((averaged[k] - expected[k]).abs().max()) for k in start) <= 1e-6


def test_fedavg_weights_by_samples_and_validates():
    a = ClientUpdate(0, {"w": torch.tensor([0.0, 3.0])}, num_samples=1, loss=0.0)
    b = ClientUpdate(1, {"w": torch.tensor([4.0, 3.0])}, num_samples=3, loss=0.0)
    torch.testing.assert_close(fedavg([a, b])["w"], torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match="at least one"):
        fedavg([])
    with pytest.raises(ValueError, match="keys"):
        fedavg([a, ClientUpdate(2, {"v": torch.zeros(2)}, 1, 0.0)])


def test_evaluate_matches_manual_computation():
    model, data, _ = _setup(n=37)
    state = {k: v + 0.1 for k, v in trainable_state(model).items()}
    model.train()
    accuracy, loss = evaluate(model, state, data, batch_size=5)
    assert model.training  # mode restored
    assert 0.0 <= accuracy <= 1.0
    load_trainable_state(model, state)
    model.eval()
    with torch.no_grad():
        logits = model(data.input_ids, data.attention_mask)
    assert accuracy == int((logits.argmax(-1) == data.labels).sum()) / len(data)
    assert loss == pytest.approx(float(F.cross_entropy(logits, data.labels)), rel=1e-5)


def test_batch_indices_cover_the_shard_before_repeating():
    shard = np.arange(10, 20)
    batches = batch_indices(shard, 4, steps=5, rng=np.random.default_rng(0))
    assert batches.shape == (5, 4)
    assert len(np.unique(batches[:2])) == 8 and set(batches.ravel()) <= set(shard)
    assert batch_indices(shard, 64, steps=1, rng=np.random.default_rng(0)).shape == (1, 10)


def test_trainer_validates():
    model, data, shards = _setup()
    with pytest.raises(ValueError, match="optimizer"):
        LocalTrainer(model, data, shards, batch_size=8, lr=1e-3, optimizer="lion", seed=0)
    with pytest.raises(ValueError, match=r"shards\[1\]"):
        LocalTrainer(model, data, [shards[0], np.array([10_000])], batch_size=8, lr=1e-3, seed=0)
    trainer = LocalTrainer(model, data, shards, batch_size=8, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="clients"):
        trainer.train(trainable_state(model), [4], steps=1, round_index=0)
    with pytest.raises(ValueError, match="steps"):
        trainer.train(trainable_state(model), [0], steps=0, round_index=0)
    twice = trainer.train(trainable_state(model), [1, 1], steps=1, round_index=0)  # a client may appear twice
    assert _max_diff(twice[0].state, twice[1].state) == 0.0
    with pytest.raises(ValueError, match="ranks"):
        trainer.train(trainable_state(model), [0, 1], steps=1, round_index=0, ranks=[2, 5])
    with pytest.raises(ValueError, match="ranks"):
        trainer.train(trainable_state(model), [0, 1], steps=1, round_index=0, ranks=[2])
    assert trainer.train(trainable_state(model), [], steps=1, round_index=0) == []


def test_per_client_dropout_rate_scale_and_padding():
    """Dropout drops each entry with probability p, scales the kept ones by 1/(1 - p), draws a client's mask from its
    own generator only, and never drops past a client's own token width (its padding)."""
    p, x = 0.1, torch.ones(6, 40, 32)
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    out = ClientRows([4, 2], generators, widths=[40, 25]).dropout(x, p)
    first, second = out[:4], out[4:]
    assert torch.unique(out).tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert float((first == 0).float().mean()) == pytest.approx(p, abs=0.01)
    assert float((second[:, :25] == 0).float().mean()) == pytest.approx(p, abs=0.015)
    assert bool((second[:, 25:] != 0).all())  # padding kept
    alone = ClientRows([2], [torch.Generator().manual_seed(2)], widths=[25]).dropout(torch.ones(2, 25, 32), p)
    assert torch.equal(alone, second[:, :25])  # the same mask as if client 2 had trained alone
