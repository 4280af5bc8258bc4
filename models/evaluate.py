"""Accuracy and loss of a global adapter on held-out data."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from models.backbone import SplitClassifier
from models.data import EncodedData, trim_padding
from models.device import autocast
from models.lora import check_state, forward_with_state


@torch.no_grad()
def evaluate(
    model: SplitClassifier, state: Mapping[str, torch.Tensor], data: EncodedData, *, batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` with `state` as its trainable parameters, in eval mode (no
    dropout), batched by token length, matrix products in `dtype`. The model's own parameters and its train/eval
    mode are left as they were."""
    if len(data) == 0:
        raise ValueError("evaluate: data is empty; pass a non-empty EncodedData")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_state({name: p for name, p in model.named_parameters() if p.requires_grad}, state)
    device = next(model.parameters()).device
    state = {name: value.to(device, torch.float32) for name, value in state.items()}
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        # Batches of similar length, so trimming padding per batch saves most of the padded compute.
        order = torch.argsort(data.attention_mask.sum(dim=1), stable=True)
        for start in range(0, len(data), batch_size):
            rows = order[start : start + batch_size]
            labels = data.labels[rows].to(device)
            input_ids, attention_mask = trim_padding(data.input_ids[rows], data.attention_mask[rows])
            with autocast(device, dtype):
                logits = forward_with_state(model, state, input_ids.to(device), attention_mask.to(device)).float()
            correct += int((logits.argmax(dim=-1) == labels).sum())
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
    finally:
        model.train(was_training)
    return correct / len(data), loss_sum / len(data)
