"""Split federated LoRA (seed 001): the embedding and the task head run on each vehicle, the LoRA-adapted encoder on
the edge server. Vehicles upload embeddings, the server returns encoder features, each vehicle steps its own head
and uploads the feature gradients, and the server back-propagates them into one averaged update of the global LoRA
matrices. All scheduled clients share a single batched encoder pass, which gives the same update as the literal
per-client exchange because the averaged LoRA gradient is the gradient of the sum of per-client losses over |S_t|."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.aggregate import fedavg
from models.backbone import SplitClassifier
from models.data import EncodedData, trim_padding
from models.device import Precision, autocast
from models.evaluate import evaluate
from models.lora import is_lora_a, is_lora_b, rank_profile
from models.trainer import ClientUpdate, LocalTrainer, batch_indices

SERVER_OPTIMIZERS = ("sgd", "adam")
ENCODER = "encoder."
HEAD = "head."


@dataclass(frozen=True)
class SplitExchange:
    """The sizes of one client's split round, in values (cosim.payload turns them into bits on the air).

    Embeddings (up) and features (down) are token-level b×ℓ×d tensors: the head pools over tokens on the vehicle, so
    the server must return every token's feature. ℓ is the wire length (the padded max_length), not the trimmed
    compute length. The gradient information (up) is the paper's "gradient of the task module with respect to the
    output of a low-rank matrix": one r-vector per token for each of the M LoRA-adapted layers, b·ℓ·M values per
    rank component, which is why the payload grows with the rank. (The server computes the same averaged LoRA
    gradient from the feature gradients by the chain rule; only the bits on the air follow the paper.) Not counted:
    the attention mask (b lengths) and the labels, which never leave the vehicle."""

    tokens: int  # b·ℓ
    hidden_size: int  # d
    rank: int  # r of the server's global LoRA
    adapted_modules: int  # M

    @property
    def embedding_values(self) -> int:
        return self.tokens * self.hidden_size

    @property
    def gradient_values_per_rank(self) -> int:
        return self.tokens * self.adapted_modules


class SplitTrainer:
    """The learning side of split federated LoRA: one global LoRA state on the server and one head per client
    (persistent across rounds, all starting from the model's initial head). The model's own parameters are never
    modified; states are swapped in with functional_call."""

    def __init__(
        self,
        model: SplitClassifier,
        data: EncodedData,
        shards: Sequence[np.ndarray],
        *,
        batch_size: int,
        server_lr: float,
        head_lr: float,
        seed: int,
        server_optimizer: Literal["sgd", "adam"] = "sgd",
        precision: Precision = "float32",
    ) -> None:
        if server_lr <= 0:
            raise ValueError(f"server_lr must be > 0, got {server_lr}")
        if server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(f"server_optimizer must be one of {SERVER_OPTIMIZERS}, got {server_optimizer!r}")
        # The flat trainer validates batch size, seed and shards and holds the data on the device; reusing it also
        # makes a split round draw exactly the batch that the first local step of flat training would.
        self.local = LocalTrainer(model, data, shards, batch_size=batch_size, lr=head_lr, optimizer="sgd", seed=seed,
                                  precision=precision)
        self.model, self.device, self.head_lr, self.seed = model, self.local.device, head_lr, seed
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self._lora = {  # LoRA matrices only: a bare model has every encoder weight trainable, and none of them is one
            name.removeprefix(ENCODER): p.detach().float().clone().requires_grad_()
            for name, p in sorted(trainable.items())
            if name.startswith(ENCODER) and (is_lora_a(name) or is_lora_b(name))
        }
        if not self._lora:
            raise ValueError("the model's encoder has no LoRA matrices; call add_lora(model, ...) first")
        clients = len(self.local.shards)
        self._heads = {  # name -> (clients, *shape): every client's head, stacked so a round gathers by client
            name.removeprefix(HEAD): p.detach().float().expand(clients, *p.shape).clone().requires_grad_()
            for name, p in sorted(trainable.items()) if name.startswith(HEAD)
        }
        self._samples_trained = np.zeros(clients, dtype=np.int64)  # per head: the evaluation's ensemble weights
        optimizer = torch.optim.SGD if server_optimizer == "sgd" else torch.optim.Adam
        self._server_optimizer = optimizer(list(self._lora.values()), lr=server_lr)

    @property
    def global_state(self) -> dict[str, torch.Tensor]:
        """The global LoRA matrices (model parameter names, float32 CPU clones)."""
        return {ENCODER + name: p.detach().cpu().clone() for name, p in self._lora.items()}

    def head_state(self, client: int) -> dict[str, torch.Tensor]:
        """Client's head (model parameter names, float32 CPU clones); with global_state it is a full trainable
        state, as models.evaluate and models.lora.load_trainable_state expect."""
        self._check_clients([client])
        return {HEAD + name: stacked[client].detach().cpu().clone() for name, stacked in self._heads.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything a round changes (global LoRA, every client's head, samples per head, the server optimiser's
        state), for a checkpoint: load_state_dict of it continues exactly where this trainer is."""
        return {"lora": {name: p.detach().clone() for name, p in self._lora.items()},
                "heads": {name: p.detach().clone() for name, p in self._heads.items()},
                "samples_trained": torch.from_numpy(self._samples_trained.copy()),
                "server_optimizer": self._server_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict() of a trainer built with the same model, data and settings (in place, so the
        server optimiser keeps its parameters)."""
        with torch.no_grad():
            for live, saved in ((self._lora, state["lora"]), (self._heads, state["heads"])):
                for name, p in live.items():
                    p.copy_(saved[name])
        self._samples_trained = state["samples_trained"].numpy().copy()
        self._server_optimizer.load_state_dict(state["server_optimizer"])

    @property
    def exchange(self) -> SplitExchange:
        """One client's round at this trainer's batch size, the data's padded length and the global LoRA's rank."""
        with torch.no_grad():  # the embedding's token count: the padded text length, or ViT's patches + [CLS]
            seq_len = self.model.embedding(input_ids=self.local.data.input_ids[:1]).shape[1]
        profile = rank_profile(self.global_state)
        return SplitExchange(self.local.batch_size * seq_len, self.model.config.hidden_size, profile.rank,
                             profile.adapted_modules)

    def batch(self, client: int, round_index: int) -> np.ndarray:
        """The sample indices client draws in round_index: seeded by (seed, round_index, client) as in LocalTrainer,
        so it does not depend on who else takes part."""
        batch_seq, _ = np.random.SeedSequence([self.seed, round_index, client]).spawn(2)
        return batch_indices(self.local.shards[client], self.local.batch_size, 1, np.random.default_rng(batch_seq))[0]

    def round(self, clients: Sequence[int], round_index: int) -> float:
        """One split round for the clients whose exchanges all arrived: each client's head takes one SGD step on
        its own loss, the global LoRA takes one server step on the mean of their LoRA gradients. Returns the mean
        of the clients' batch losses (before the step), NaN and no change when clients is empty."""
        self._check_clients(clients)
        if round_index < 0:
            raise ValueError(f"round_index must be >= 0, got {round_index}")
        if len(set(clients)) != len(clients):
            raise ValueError(f"clients must be distinct, got {list(clients)}")
        if not clients:
            return float("nan")
        batches = [self.batch(client, round_index) for client in clients]
        rows = torch.as_tensor(np.concatenate(batches), device=self.device)
        index = torch.as_tensor(clients, device=self.device)
        sizes = torch.as_tensor([len(b) for b in batches], device=self.device)
        owner = torch.repeat_interleave(index, sizes)
        self.model.train()
        # Dropout draws from torch's global generator: fork it so the round depends only on (seed, round_index).
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, round_index]).generate_state(1)[0]))
            logits = self._logits(self._lora, self._heads, owner, rows)
        per_sample = F.cross_entropy(logits, self.local.data.labels[rows], reduction="none")
        # Sum of per-client mean losses: each head gets exactly its own gradient, the LoRA gets Σ_k g_k.
        total = (per_sample / torch.repeat_interleave(sizes, sizes)).sum()
        grads = torch.autograd.grad(total, [*self._lora.values(), *self._heads.values()])
        for param, grad in zip(self._lora.values(), grads[: len(self._lora)], strict=True):
            param.grad = grad / len(clients)
        self._server_optimizer.step()
        with torch.no_grad():  # each participant's own SGD step on its head; the others' heads are not touched
            for stacked, grad in zip(self._heads.values(), grads[len(self._lora) :], strict=True):
                stacked[index] -= self.head_lr * grad[index]
        np.add.at(self._samples_trained, clients, [len(b) for b in batches])
        return float(total.detach()) / len(clients)

    def _logits(
        self, lora: Mapping[str, torch.Tensor], heads: Mapping[str, torch.Tensor], owner: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Vehicle embedding -> server encoder (global LoRA, one batch for all clients) -> each sample through its
        owner's head (stacked head weights gathered per sample under vmap)."""
        input_ids, attention_mask = trim_padding(self.local.data.input_ids[rows], self.local.data.attention_mask[rows])
        model = self.model
        with autocast(self.device, self.local.dtype):
            with torch.no_grad():  # frozen, on the vehicle
                embedded = model.embedding(input_ids=input_ids)
            features = torch.func.functional_call(
                model.encoder, dict(lora), (embedded, model.additive_mask(attention_mask, embedded.dtype)),
                strict=False,
            )[0]

            def head(params: dict[str, torch.Tensor], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return torch.func.functional_call(model.head, params, (hidden[None], mask[None]))[0]

            gathered = {name: stacked[owner] for name, stacked in heads.items()}
            logits = torch.func.vmap(head, randomness="different")(gathered, features, attention_mask)
        return logits.float()

    def evaluate(self, data: EncodedData) -> tuple[float, float]:
        """(accuracy, loss) of the global LoRA with the average of the clients' heads, each weighted by the samples
        it has trained on (the initial head if none has). The head is linear after pooling, so the averaged head's
        logits are the weighted average of those clients' logits: the ensemble of the personal heads. Weighting by
        shard size instead would let a head that took one step in one round count as much as one stepped every
        round, and pull the ensemble back toward the untrained head for any scheduler that spreads participation."""
        trained = np.flatnonzero(self._samples_trained)
        if len(trained):
            head = fedavg([ClientUpdate(int(c), self.head_state(int(c)), int(self._samples_trained[c]), float("nan"))
                           for c in trained])
        else:
            head = {HEAD + name: p.detach().float().cpu() for name, p in self.model.head.named_parameters()}
        return evaluate(self.model, {**self.global_state, **head}, data, dtype=self.local.dtype)

    def _check_clients(self, clients: Sequence[int]) -> None:
        count = len(self.local.shards)
        bad = [c for c in clients if not 0 <= c < count]
        if bad:
            raise ValueError(f"clients {bad} out of range: there are {count} shards (0..{count - 1})")
