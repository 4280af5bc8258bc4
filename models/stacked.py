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
        and padded with keeps: positions past it are padding for every one of its rows and never reach its loss."""
        if p == 0.0:
            return x
        token_dims = {4: (2, 3), 3: (1,)}.get(x.dim(), ())
        scale = 1.0 / (1.0 - p)
        mask = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # 0 where dropped, 1 / (1 - p) where kept
        for client, (size, row) in enumerate(zip(self.sizes, self.starts, strict=True)):
            rows = mask[row : row + size]  # contiguous: drawn exactly as a client-alone tensor would be
            generator = self.generators[client]
            if not token_dims or self.widths is None or self.widths[client] == x.shape[token_dims[0]]:
                _draw_mask(rows, p, scale, generator)
                continue
            shape = [size, *x.shape[1:]]
            for dim in token_dims:
                shape[dim] = self.widths[client]
            rows.fill_(scale)  # padding positions are kept
            own = tuple(slice(0, shape[dim]) if dim in token_dims else slice(None) for dim in range(x.dim()))
            rows[own] = _draw_mask(torch.empty(shape, dtype=x.dtype, device=x.device), p, scale, generator)
        return x * mask


def _draw_mask(out: torch.Tensor, p: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Fills the contiguous tensor `out` with 0 at probability p (rounded to a multiple of 2^-16), else `scale`,
    independently per entry. Each 64-bit draw of the generator yields four 16-bit uniforms: four times fewer draws
    than one uniform float per entry, the cost that dominates dropout on a CPU."""
    count = out.numel()
    bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=out.device)
    bits.random_(-(2**63), None, generator=generator)  # all 64 bits uniform
    threshold = round(p * 2**16) - 2**15  # int16 lanes are uniform on [-2^15, 2^15)
    return torch.mul(bits.view(torch.int16)[:count].view(out.shape) >= threshold, scale, out=out)


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
        weights = weights + attention_mask.to(weights.dtype)
    # Softmax in the scores' dtype (for bf16 torch accumulates in float32 inside the kernel): no float32 copy of the
    # (rows, heads, L, L) probabilities, which made attention ~1.4x slower on CPU (measured).
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
