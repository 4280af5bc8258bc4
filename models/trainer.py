"""Local training of many clients on one shared model: each client's adapter is a dict of tensors swapped into the
frozen base with functional_call, so no client ever copies the base and clients can later be batched with vmap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.backbone import SplitClassifier
from models.data import EncodedData, trim_padding
from models.device import autocast
from models.lora import check_state, forward_with_state

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class ClientUpdate:
    """What one client hands back after a round of local steps."""

    client: int
    state: dict[str, torch.Tensor]
    num_samples: int  # size of the client's shard (FedAvg weight)
    loss: float  # mean training loss over its local steps


def batch_indices(shard: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, b) sample indices, b = min(batch_size, shard size): epochs of fresh permutations cut into batches
    (a short tail is dropped), so no sample repeats within an epoch."""
    size = min(batch_size, len(shard))
    per_epoch = len(shard) // size
    batches: list[np.ndarray] = []
    while len(batches) < steps:
        batches.extend(rng.permutation(shard)[: per_epoch * size].reshape(per_epoch, size))
    return np.stack(batches[:steps])


class LocalTrainer:
    """Runs the real local LoRA steps of the clients that take part in a round."""

    def __init__(
        self,
        model: SplitClassifier,
        data: EncodedData,
        shards: Sequence[np.ndarray],
        *,
        batch_size: int,
        lr: float,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        seed: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.shards = [np.asarray(shard, dtype=np.int64) for shard in shards]
        for client, shard in enumerate(self.shards):
            if len(shard) == 0 or shard.min() < 0 or shard.max() >= len(data):
                raise ValueError(
                    f"shards[{client}] must be a non-empty array of sample indices in [0, {len(data)}); "
                    f"build shards with partition_iid / partition_dirichlet over this data"
                )
        self.model = model
        self.device = next(model.parameters()).device
        self.data = EncodedData(
            *(tensor.to(self.device) for tensor in (data.input_ids, data.attention_mask, data.labels))
        )
        self.batch_size, self.lr, self.optimizer, self.seed = batch_size, lr, optimizer, seed
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def train(
        self, global_state: Mapping[str, torch.Tensor], clients: Sequence[int], steps: int, round_index: int
    ) -> list[ClientUpdate]:
        """Each client starts from global_state and runs `steps` mini-batch steps on its own shard (batches drawn
        from a numpy Generator seeded by (seed, round_index, client), so a client's result does not depend on
        which other clients train in the round or in what order). A fresh optimiser per client per round.
        Returns updates in the order of `clients`."""
        check_state(self.trainable, global_state)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if round_index < 0:
            raise ValueError(f"round_index must be >= 0, got {round_index}")
        bad = [c for c in clients if not 0 <= c < len(self.shards)]
        if bad:
            raise ValueError(
                f"clients {bad} out of range: there are {len(self.shards)} shards (0..{len(self.shards) - 1})"
            )
        self.model.train()
        return [self._train_client(global_state, client, steps, round_index) for client in clients]

    def _train_client(
        self, global_state: Mapping[str, torch.Tensor], client: int, steps: int, round_index: int
    ) -> ClientUpdate:
        batch_seq, torch_seq = np.random.SeedSequence([self.seed, round_index, client]).spawn(2)
        batches = batch_indices(self.shards[client], self.batch_size, steps, np.random.default_rng(batch_seq))
        params = {
            name: value.to(self.device, torch.float32, copy=True).requires_grad_()
            for name, value in sorted(global_state.items())
        }
        optimizer = self._optimizer(list(params.values()))
        losses = []
        # Dropout draws from torch's global generator: fork it so each client's stream depends only on its own seed.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(torch_seq.generate_state(1)[0]))
            for rows in batches:
                loss = self._loss(params, torch.as_tensor(rows, device=self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
        state = {name: value.detach().cpu().clone() for name, value in params.items()}
        return ClientUpdate(client, state, len(self.shards[client]), float(torch.stack(losses).mean()))

    def _loss(self, params: Mapping[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of one mini-batch: a pure function of `params`."""
        input_ids, attention_mask = trim_padding(self.data.input_ids[rows], self.data.attention_mask[rows])
        with autocast(self.device):
            logits = forward_with_state(self.model, params, input_ids, attention_mask)
        return F.cross_entropy(logits.float(), self.data.labels[rows])

    def _optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        return torch.optim.AdamW(params, lr=self.lr)
