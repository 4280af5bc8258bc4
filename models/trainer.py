"""Local training of many clients at once on one shared frozen base. The clients of a round start from the same
snapshot; their adapters and heads are stacked along a leading client dimension and every local step is one forward
and backward pass over their mini-batches together (models.stacked), instead of a loop of per-client models. On a
GPU all clients share one pass; on a CPU passes are capped in size, which is faster there. Matrix products run in bf16
where the hardware has it (`precision="auto"`). Heterogeneous LoRA ranks are zero-padded to the largest one, with the
padding masked out of forward and gradient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.backbone import SplitClassifier
from models.data import EncodedData, trim_padding
from models.device import Precision, autocast, compute_dtype
from models.lora import check_state, is_lora_a, is_lora_b, resize_state, state_rank
from models.soft import add_orthogonal_gradient
from models.stacked import ClientRows, stacked_clients

OPTIMIZERS = ("sgd", "adamw")
# CPU passes, measured on 16 clients x 16 x 64 tokens (MiniLM, bf16): 2,048 tokens a pass 7.9 client-steps/s, 4,096
# 7.8, 8,192 6.6, all 16,384 at once 2.5 (page faults); float32 alike: 3.0 at 1,024-2,048 tokens, 2.1 at 8,192.
CPU_TOKENS_PER_PASS = 2048


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


def rank_masks(
    state: Mapping[str, torch.Tensor], ranks: Sequence[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Per LoRA matrix of a stacked state at the largest rank: a 0/1 mask (clients, r, 1) for A, (clients, 1, r) for
    B, that keeps client k's first ranks[k] components. Multiplying the stacked weights by it zeroes the padding in
    the forward pass and in the gradient alike, so padded entries stay exactly 0 under any optimiser."""
    top = max(ranks)
    keep = (torch.arange(top, device=device) < torch.as_tensor(ranks, device=device)[:, None]).float()
    masks = {}
    for name in state:
        if is_lora_a(name):
            masks[name] = keep[:, :, None]
        elif is_lora_b(name):
            masks[name] = keep[:, None, :]
    return masks


class LocalTrainer:
    """Runs the real local LoRA steps of the clients that take part in a round, stacked into batched passes.
    `precision`: "float32" (exact, the default), "bfloat16" or "auto" (bf16 where native; models.device).
    `tokens_per_pass`: mini-batch tokens stacked into one pass; None = the device's default (CPU 2,048, GPU all).
    `orthogonal_weight`: λ of SOFT's orthogonality regulariser on the LoRA factors (models.soft; 0 = off)."""

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
        precision: Precision = "float32",
        tokens_per_pass: int | None = None,
        orthogonal_weight: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if orthogonal_weight < 0:
            raise ValueError(f"orthogonal_weight must be >= 0, got {orthogonal_weight}")
        self.orthogonal_weight = orthogonal_weight
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
        self.dtype = compute_dtype(self.device, precision)
        if tokens_per_pass is not None and tokens_per_pass < 1:
            raise ValueError(f"tokens_per_pass must be >= 1 or None, got {tokens_per_pass}")
        if tokens_per_pass is None and self.device.type == "cpu":
            tokens_per_pass = CPU_TOKENS_PER_PASS
        self.tokens_per_pass = tokens_per_pass
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def train(
        self,
        global_state: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
        clients: Sequence[int],
        steps: int,
        round_index: int,
        ranks: Sequence[int] | None = None,
    ) -> list[ClientUpdate]:
        """Each client starts from global_state (truncated to ranks[k] when given: HetLoRA) and runs `steps`
        mini-batch steps on its own shard with its own fresh optimiser. `global_state` may also be a list with one
        state per client (several tasks' adapters and heads on the one base, stacked into the same passes). Batches
        and dropout masks are drawn from streams seeded by (seed, round_index, client), so a client's result does not
        depend on which other clients train in the round or in what order (to float rounding). Returns updates in
        the order of `clients`, each state at the client's own rank."""
        clients = [int(client) for client in clients]
        shared = isinstance(global_state, Mapping)
        starts = [global_state] * len(clients) if shared else list(global_state)
        if len(starts) != len(clients):
            raise ValueError(f"global_state: {len(starts)} states for {len(clients)} clients; pass one per client")
        for start in [global_state] if shared else starts:
            check_state(self.trainable, start)
        self._validate(clients, steps, round_index)
        ranks = self._ranks(global_state if shared else starts[0] if starts else self.trainable, clients, ranks)
        if not clients:
            return []
        # Stack clients by decreasing batch size (stable): equal sizes are contiguous and share one bmm per layer.
        order = sorted(range(len(clients)), key=lambda k: -self._rows(clients[k]))
        updates: dict[int, ClientUpdate] = {}
        for part in self._passes(order, clients):
            trained = self._train_together([starts[k] for k in part], [clients[k] for k in part],
                                           [ranks[k] for k in part], steps, round_index)
            updates.update(zip(part, trained, strict=True))
        return [updates[k] for k in range(len(clients))]

    def _rows(self, client: int) -> int:
        return min(self.batch_size, len(self.shards[client]))

    def _passes(self, order: list[int], clients: list[int]) -> list[list[int]]:
        """`order` cut into consecutive runs of clients trained together, each at most `tokens_per_pass` tokens of
        mini-batch (at least one client). Clients are independent, so the cut changes nothing but speed: on a CPU,
        passes bigger than the caches (and than the allocator's 32 MB mmap threshold, past which every activation
        is fresh zeroed pages) are slower per client than small ones."""
        if self.tokens_per_pass is None:
            return [order]
        per_row = self.data.input_ids[0].numel() if self.data.input_ids.dim() == 2 else _image_tokens(self.model)
        passes: list[list[int]] = []
        tokens = 0
        for k in order:
            cost = self._rows(clients[k]) * per_row
            if not passes or tokens + cost > self.tokens_per_pass:
                passes.append([])
                tokens = 0
            passes[-1].append(k)
            tokens += cost
        return passes

    def _train_together(
        self, states: list[Mapping[str, torch.Tensor]], clients: list[int], ranks: list[int], steps: int,
        round_index: int,
    ) -> list[ClientUpdate]:
        """One batched pass: `clients` (decreasing batch size), each from its own start state, stacked and trained
        for `steps`; updates in order."""
        batches, generators = [], []
        for client in clients:
            batch_seq, torch_seq = np.random.SeedSequence([self.seed, round_index, client]).spawn(2)
            batches.append(batch_indices(self.shards[client], self.batch_size, steps, np.random.default_rng(batch_seq)))
            generator = torch.Generator(device=self.device)
            generators.append(generator.manual_seed(int(torch_seq.generate_state(1)[0])))
        # Each client's own truncation of the global adapter, zero-padded to the largest rank in the pass.
        top = max(ranks, default=0)
        starts = [resize_state(resize_state(state, rank), top) if rank else state
                  for state, rank in zip(states, ranks, strict=True)]
        params = {
            name: torch.stack([start[name] for start in starts]).to(self.device, torch.float32).requires_grad_()
            for name in sorted(states[0])
        }
        masks = rank_masks(params, ranks, self.device) if len(set(ranks)) > 1 else {}
        optimizer = self._optimizer(list(params.values()))
        sizes = [batch.shape[1] for batch in batches]
        losses = []
        self.model.train()
        for step in range(steps):
            rows = torch.as_tensor(np.concatenate([batch[step] for batch in batches]), device=self.device)
            effective = {name: value * masks[name] if name in masks else value for name, value in params.items()}
            per_client = self._losses(effective, rows, ClientRows(sizes, generators))
            optimizer.zero_grad(set_to_none=True)
            per_client.sum().backward()  # a sum of per-client means: each client's gradient is exactly its own
            if self.orthogonal_weight:
                add_orthogonal_gradient(params, self.orthogonal_weight)
            optimizer.step()
            losses.append(per_client.detach())
        mean_loss = torch.stack(losses).mean(dim=0).cpu()
        updates = []
        for slot, (client, rank) in enumerate(zip(clients, ranks, strict=True)):
            state = {name: value[slot].detach().cpu().clone() for name, value in params.items()}
            state = resize_state(state, rank) if rank else state
            updates.append(ClientUpdate(client, state, len(self.shards[client]), float(mean_loss[slot])))
        return updates

    def _losses(self, params: Mapping[str, torch.Tensor], rows: torch.Tensor, layout: ClientRows) -> torch.Tensor:
        """(clients,) mean cross-entropy of each client's mini-batch, all clients in one pass."""
        input_ids, attention_mask = self.data.input_ids[rows], self.data.attention_mask[rows]
        if input_ids.dim() == 2:  # tokens: each client's own width drives its dropout masks
            lengths = attention_mask.sum(dim=1).split(list(layout.sizes))
            layout = ClientRows(layout.sizes, layout.generators, [max(int(part.max()), 1) for part in lengths])
            input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        with stacked_clients(self.model, params, layout), autocast(self.device, self.dtype):
            logits = self.model(input_ids, attention_mask)
        per_sample = F.cross_entropy(logits.float(), self.data.labels[rows], reduction="none")
        return torch.stack([part.mean() for part in per_sample.split(list(layout.sizes))])

    def _validate(self, clients: list[int], steps: int, round_index: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if round_index < 0:
            raise ValueError(f"round_index must be >= 0, got {round_index}")
        bad = [c for c in clients if not 0 <= c < len(self.shards)]
        if bad:
            raise ValueError(
                f"clients {bad} out of range: there are {len(self.shards)} shards (0..{len(self.shards) - 1})"
            )

    @staticmethod
    def _ranks(global_state: Mapping[str, torch.Tensor], clients: list[int], ranks: Sequence[int] | None) -> list[int]:
        """Every client's LoRA rank, each in [1, global rank]; 0 for all when `ranks` is None (the global state as is,
        which then need not hold LoRA matrices at all)."""
        if ranks is None:
            return [0] * len(clients)
        ranks = [int(rank) for rank in ranks]
        top = state_rank(global_state)
        if len(ranks) != len(clients) or not all(1 <= rank <= top for rank in ranks):
            raise ValueError(
                f"ranks must give one rank in [1, {top}] (the global adapter's rank) per client; got {ranks} for "
                f"{len(clients)} clients"
            )
        return ranks

    def _optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        """torch's SGD and AdamW are element-wise, so one optimiser over the stacked tensors is exactly one
        optimiser per client (all clients take the same number of steps)."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        return torch.optim.AdamW(params, lr=self.lr)


def _image_tokens(model: SplitClassifier) -> int:
    """Tokens a vision transformer makes of one image: its patches and the class token."""
    config = model.config
    return (config.image_size // config.patch_size) ** 2 + 1
