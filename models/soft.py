"""SOFT (seed 002): sparsified orthogonal fine-tuning of LoRA adapters.

A client uploads only k of the r rank components of every adapted module (row i of A and column i of B, the
granularity cosim.payload counts) and the whole head. Which ones: the largest scores ‖A_i‖·‖B_:,i‖ ("norm"), which
is exactly the Frobenius norm of component i's contribution B_:,i·A_i to the weight update, read off the factors
without an SVD or any matrix product; or k uniformly at random ("random", the random-k baseline).

The orthogonality regulariser λ·Σ_modules (‖off(AAᵀ)‖² + ‖off(BᵀB)‖²), off(·) the off-diagonal part, decorrelates
the rank components, so the top-scoring ones carry distinct directions and dropping the rest loses little. It is the
scale-free form of ‖AAᵀ − I‖² + ‖BᵀB − I‖²: that one would drag LoRA's zero-initialised B to unit columns and the
update (α/r)·BA to full size within a few steps. Its gradient, 4·off(AAᵀ)·A and 4·B·off(BᵀB), is added in closed
form after the task loss's backward pass (no graph, r×r Gram matrices only).

Merge rule: the server averages every component over the clients that sent it (weighted by their samples) and keeps
its previous value where nobody did; a component a client left out is not averaged as a zero. The head is averaged
over everyone. When every client sends everything this is FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from models.backbone import SplitClassifier
from models.data import EncodedData, trim_padding
from models.device import autocast
from models.lora import is_lora_a

Selection = Literal["norm", "random"]


def lora_pairs(state: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(A name, B name) of every adapted module, in sorted order."""
    return [(name, name.replace(".lora_A.", ".lora_B.")) for name in sorted(state) if is_lora_a(name)]


def component_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(r,) scores ‖A_i‖·‖B_:,i‖ of A (r, in) and B (out, r): the norm of each component's rank-one update."""
    return torch.linalg.vector_norm(a.float(), dim=1) * torch.linalg.vector_norm(b.float(), dim=0)


def component_norms(state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(r, 2) float64: for each rank component i, ‖A_i‖ and ‖B_:,i‖ over every adapted module together (the norms of
    row i of all A matrices and of column i of all B matrices): what HetLoRA's rank self-pruning reads."""
    pairs = lora_pairs(state)
    a = sum(state[a_name].double().square().sum(dim=1) for a_name, _ in pairs)
    b = sum(state[b_name].double().square().sum(dim=0) for _, b_name in pairs)
    return torch.stack([a, b], dim=1).sqrt().numpy()


def select_components(scores: torch.Tensor, kept: int, selection: Selection,
                      rng: np.random.Generator) -> torch.Tensor:
    """Ascending indices of the `kept` components to send: the highest scores (ties to the lower index), or uniformly
    random ones."""
    rank = len(scores)
    if not 1 <= kept <= rank:
        raise ValueError(f"kept must lie in [1, {rank}] (the rank), got {kept}")
    if selection == "random":
        chosen = torch.as_tensor(rng.choice(rank, size=kept, replace=False))
    else:
        chosen = torch.argsort(-scores.float(), stable=True)[:kept]
    return torch.sort(chosen).values


@dataclass(frozen=True)
class SparseUpload:
    """What a client puts on the air: the whole head (`dense`), and per adapted module the indices of the sent
    components (the bitmap, when not all are sent) with their A rows and B columns."""

    client: int
    num_samples: int  # the FedAvg weight
    rank: int  # the client's LoRA rank r: its bitmap has r bits per module
    dense: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]  # A name -> (k,) ascending component indices
    rows: dict[str, torch.Tensor]  # A name -> (k, in)
    columns: dict[str, torch.Tensor]  # B name -> (out, k)

    def values(self) -> int:
        return sum(value.numel() for part in (self.dense, self.rows, self.columns) for value in part.values())

    def wire_bits(self, bits_per_value: int) -> int:
        """Values at the wire precision, plus an r-bit bitmap per module when some component was left out."""
        sparse = any(len(index) < self.rank for index in self.indices.values())
        return self.values() * bits_per_value + (len(self.indices) * self.rank if sparse else 0)


def sparsify(client: int, num_samples: int, state: Mapping[str, torch.Tensor], kept: int, selection: Selection,
             rng: np.random.Generator) -> SparseUpload:
    """The upload of a trained client `state` that keeps `kept` components per module (see the module doc)."""
    pairs = lora_pairs(state)
    lora = {name for pair in pairs for name in pair}
    indices, rows, columns = {}, {}, {}
    for a_name, b_name in pairs:
        a, b = state[a_name], state[b_name]
        index = select_components(component_scores(a, b), kept, selection, rng)
        indices[a_name], rows[a_name], columns[b_name] = index, a[index].clone(), b[:, index].clone()
    rank = len(state[pairs[0][0]]) if pairs else 0
    dense = {name: value.clone() for name, value in state.items() if name not in lora}
    return SparseUpload(client, num_samples, rank, dense, indices, rows, columns)


def sparse_merge(global_state: Mapping[str, torch.Tensor], uploads: Sequence[SparseUpload]) -> dict[str, torch.Tensor]:
    """The new global state (see the module doc for the rule), accumulated in float64, float32 out, sorted keys.
    A client's component indices refer to the global adapter's leading components (a lower-rank client sends a
    subset of its own r_k)."""
    if not uploads:
        raise ValueError("sparse_merge needs at least one upload; skip aggregation when no client's upload arrived")
    total = sum(upload.num_samples for upload in uploads)
    merged = {name: value.double().clone() for name, value in global_state.items()}
    for name in uploads[0].dense:
        merged[name] = sum((upload.dense[name].double() * (upload.num_samples / total) for upload in uploads),
                           start=torch.zeros_like(merged[name]))
    for a_name, b_name in lora_pairs(global_state):
        rank = len(global_state[a_name])
        a_sum, b_sum = torch.zeros_like(merged[a_name]), torch.zeros_like(merged[b_name])
        weight = torch.zeros(rank, dtype=torch.float64)
        for upload in uploads:
            index = upload.indices[a_name]
            a_sum[index] += upload.rows[a_name].double() * upload.num_samples
            b_sum[:, index] += upload.columns[b_name].double() * upload.num_samples
            weight[index] += upload.num_samples
        sent = weight > 0
        merged[a_name][sent] = a_sum[sent] / weight[sent, None]
        merged[b_name][:, sent] = b_sum[:, sent] / weight[sent]
    return {name: merged[name].float() for name in sorted(merged)}


def _off_diagonal(gram: torch.Tensor) -> torch.Tensor:
    return gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))


def orthogonal_penalty(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖off(AAᵀ)‖² + ‖off(BᵀB)‖² of A (..., r, in) and B (..., out, r), per leading index."""
    return (_off_diagonal(a @ a.transpose(-1, -2)).square().sum((-1, -2))
            + _off_diagonal(b.transpose(-1, -2) @ b).square().sum((-1, -2)))


def orthogonal_gradient(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty's gradient with respect to A and B, in closed form: 4·off(AAᵀ)·A, 4·B·off(BᵀB)."""
    return (4 * _off_diagonal(a @ a.transpose(-1, -2)) @ a, 4 * b @ _off_diagonal(b.transpose(-1, -2) @ b))


@torch.no_grad()
def add_orthogonal_gradient(params: Mapping[str, torch.Tensor], weight: float) -> None:
    """Adds weight × the penalty's gradient to the .grad of every LoRA pair in `params` (stacked per client or not).
    Zero-padded components (a lower-rank client's) get a zero gradient, so they stay zero."""
    for a_name, b_name in lora_pairs(params):
        a, b = params[a_name], params[b_name]
        grad_a, grad_b = orthogonal_gradient(a.detach(), b.detach())
        for param, grad in ((a, grad_a), (b, grad_b)):
            param.grad = weight * grad if param.grad is None else param.grad.add_(grad, alpha=weight)


@dataclass(frozen=True)
class OfflinePreset:
    """TSFA's offline stage, from the covariance Σ of the frozen base's pooled features on a calibration batch.

    density = erank_r / r, where erank_r = exp(entropy of λ_1..λ_r / Σ λ_1..λ_r) is the effective rank (Roy and
    Vetterli, 2007) of Σ's top-r spectrum: the number of directions among the r that the adapter can hold which carry
    the data's variance evenly; components beyond it mostly duplicate them. lr = min(lr, 2/λ_max(E[xxᵀ])) for SGD:
    the softmax head's loss is ½λ_max(E[xxᵀ])-smooth in its weights, and 1/L is the step the convergence bound
    allows. AdamW is invariant to the gradient's scale, so its lr is kept."""

    samples: int
    feature_dim: int
    top_eigenvalues: list[float]  # λ_1..λ_r of the covariance
    effective_rank: float
    density: float
    second_moment_max: float  # λ_max(E[xxᵀ])
    lr: float

    @classmethod
    def from_features(cls, features: torch.Tensor, rank: int, lr: float, sgd: bool) -> OfflinePreset:
        x = features.double()
        centred = x - x.mean(dim=0)
        eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(x)).flip(0).clamp_min(0.0)
        top = eigenvalues[:rank]
        p = top / top.sum() if top.sum() > 0 else torch.full_like(top, 1.0 / len(top))
        effective = float(torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum()))
        second = float(torch.linalg.eigvalsh(x.T @ x / len(x))[-1])
        return cls(len(x), x.shape[1], top.tolist(), effective, min(1.0, effective / rank),
                   second, min(lr, 2.0 / second) if sgd and second > 0 else lr)


@torch.no_grad()
def pooled_features(model: SplitClassifier, data: EncodedData, samples: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, hidden) float32: what the head sees for the first `samples` rows of `data`, with the current adapter
    (a fresh one is the frozen base: LoRA's B starts at zero)."""
    device = next(model.parameters()).device
    rows = torch.arange(min(samples, len(data)))
    input_ids, attention_mask = data.input_ids[rows].to(device), data.attention_mask[rows].to(device)
    input_ids, attention_mask = trim_padding(input_ids, attention_mask)
    was_training = model.training
    model.eval()
    try:
        with autocast(device, dtype):
            hidden = model.embedding(input_ids=input_ids)
            hidden = model.encoder(hidden, attention_mask=model.additive_mask(attention_mask, hidden.dtype))[0]
            return model.head.pool(hidden, attention_mask).float().cpu()
    finally:
        model.train(was_training)
