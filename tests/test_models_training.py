import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.aggregate import fedavg
from models.backbone import load_backbone
from models.data import TextClassificationData, encode, partition_iid
from models.evaluate import evaluate
from models.lora import add_lora, load_trainable_state, trainable_state
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


def _setup(n=64, clients=4, dropout=True, seed=0):
    model, tokenizer = load_backbone("tiny-bert", 2, seed=seed)
    add_lora(model, rank=4, alpha=8.0, dropout=0.1, target_modules=["query", "value"])
    if not dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    data = encode(_sentiment_task(n), tokenizer, max_length=12)
    shards = partition_iid(n, clients, np.random.default_rng(seed))
    return model, data, shards


def _equal_states(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


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
    model, data, shards = _setup()
    trainer = LocalTrainer(model, data, shards, batch_size=8, lr=1e-2, seed=5)
    start = trainable_state(model)
    together = trainer.train(start, [3, 0, 2], steps=2, round_index=1)
    alone = trainer.train(start, [2], steps=2, round_index=1)
    assert [u.client for u in together] == [3, 0, 2]
    assert _equal_states(together[2].state, alone[0].state) and together[2].loss == alone[0].loss
    assert not _equal_states(together[0].state, together[1].state)
    next_round = trainer.train(start, [2], steps=2, round_index=2)
    assert not _equal_states(alone[0].state, next_round[0].state)
    assert _equal_states(trainable_state(model), start)  # the shared model's own parameters are untouched


def test_training_reduces_loss_on_learnable_task():
    model, data, shards = _setup(n=128, clients=1)
    trainer = LocalTrainer(model, data, shards, batch_size=32, lr=3e-2, optimizer="adamw", seed=0)
    start = trainable_state(model)
    acc0, loss0 = evaluate(model, start, data)
    state = start
    for round_index in range(40):
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
