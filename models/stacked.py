"""Many clients through one frozen base in a single forward pass. The rows of a batch are laid out client after
client; every trainable linear layer (LoRA A and B, the classifier head) holds one weight per client stacked along a
leading dimension and multiplies each client's rows by its own weight with one batched matmul per group of clients
with equal batch size. The frozen base sees one large batch, so nothing of it is copied per client. Every dropout
site draws each client's mask from that client's own generator, at that client's own token width, so a client's
result does not depend on which other clients share the pass."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

ATTENTION = "cosim-per-client-dropout"
_ACTIVE: contextvars.ContextVar[ClientRows] = contextvars.ContextVar("stacked_clients")


@dataclass(frozen=True)
class ClientRows:
    """How the rows of one batch belong to clients. `sizes[k]` rows of client k follow those of client k - 1 (the
    stacking order of the weights); `generators[k]` is client k's dropout stream; `widths[k]` is the token width of
    client k's own rows (None for images, whose length never varies), so its dropout masks have the shape they
    would have if it trained alone."""

    sizes: Sequence[int]
    generators: Sequence[torch.Generator]
    widths: Sequence[int] | None = None
    groups: list[tuple[int, int, int, int]] = field(init=False)  # (first client, clients, rows each, first row)
    starts: list[int] = field(init=False)  # first row of each client

    def __post_init__(self) -> None:
        groups, row = [], 0
        for client, size in enumerate(self.sizes):
            if groups and groups[-1][2] == size:
                first, count, _, start = groups[-1]
                groups[-1] = (first, count + 1, size, start)
            else:
                groups.append((client, 1, size, row))
            row += size
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "starts", [int(start) for start in np.cumsum([0, *self.sizes[:-1]])])

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (rows, ..., in), weight (clients, out, in), bias (clients, out): each client's rows through its own
        weight, one bmm per group of equally sized clients."""
        outputs = []
        for first, count, size, row in self.groups:
            whole = len(self.groups) == 1  # no slicing: its backward would allocate and copy full-size gradients
            inputs = (x if whole else x[row : row + count * size]).reshape(count, -1, x.shape[-1])
            w = (weight if whole else weight[first : first + count]).transpose(1, 2)
            if bias is None:
                y = torch.bmm(inputs, w)
            else:
                y = torch.baddbmm((bias if whole else bias[first : first + count]).unsqueeze(1), inputs, w)
            outputs.append(y.reshape(count * size, *x.shape[1:-1], weight.shape[1]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Inverted dropout with each client's mask from its own generator. Token dimensions (dim 1 of (rows, L,
        H) hidden states, dims 2 and 3 of (rows, heads, L, L) attention weights) are drawn at the client's own width
        and padded with ones: positions past it are padding for every one of its rows and never reach its loss.
        Masks are uniform draws compared with 1 - p (twice as fast as bernoulli_ on CPU), stored already scaled by
        1/(1 - p) in x's dtype so the multiply needs no type promotion."""
        if p == 0.0:
            return x
        keep = 1.0 - p
        token_dims = {4: (2, 3), 3: (1,)}.get(x.dim(), ())
        mask = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for client, (size, row) in enumerate(zip(self.sizes, self.starts, strict=True)):
            rows = mask[row : row + size]  # contiguous: drawn in place exactly as a client-alone tensor would be
            if not token_dims or self.widths is None or self.widths[client] == x.shape[token_dims[0]]:
                rows.uniform_(generator=self.generators[client])
                continue
            width = self.widths[client]
            shape = [size, *x.shape[1:]]
            for dim in token_dims:
                shape[dim] = width
            rows.fill_(0.0)  # below keep: padding positions are kept
            rows[tuple(slice(0, width) if dim in token_dims else slice(None) for dim in range(x.dim()))] = torch.rand(
                shape, dtype=x.dtype, device=x.device, generator=self.generators[client])
        mask = (mask < keep).to(x.dtype).mul_(1.0 / keep)
        return x * mask


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (as in transformers' BERT and ViT) whose probability dropout is drawn per client."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = _ACTIVE.get().dropout(F.softmax(weights, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(ATTENTION, _attention)


@contextlib.contextmanager
def stacked_clients(
    model: nn.Module, params: Mapping[str, torch.Tensor], rows: ClientRows
) -> Iterator[None]:
    """Within the block, model(...) on the rows laid out by `rows` uses `params` (model parameter name ->
    (clients, *shape)) for the trainable linear layers and per-client dropout everywhere. The model's own
    parameters are not used for those layers and not modified; its forwards are restored on exit."""
    patched: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and f"{name}.weight" in params:
            bias = params.get(f"{name}.bias")
            if module.bias is not None and bias is None:
                raise ValueError(f"params has {name}.weight but not {name}.bias; pass every trainable parameter")
            module.forward = partial(rows.linear, weight=params[f"{name}.weight"], bias=bias)
            patched.append(module)
        elif isinstance(module, nn.Dropout):
            module.forward = partial(rows.dropout, p=module.p if module.training else 0.0)
            patched.append(module)
    config = model.config
    attention = config._attn_implementation
    config._attn_implementation = ATTENTION
    token = _ACTIVE.set(rows)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        config._attn_implementation = attention
        for module in patched:
            del module.forward
