"""LoRA adapters on the encoder and the adapter state that clients exchange: only LoRA A/B and the head travel,
the frozen base never leaves the vehicle or the server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model

from models.backbone import SplitClassifier, module_leaf_names


def add_lora(
    model: SplitClassifier, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]
) -> SplitClassifier:
    """Inject peft LoRA adapters into `model.encoder` on the named linear layers (e.g. ['query', 'value']) and
    freeze everything except LoRA and the head. A is initialised from torch seeded with the model's seed, so two
    runs with the same seed start from the same adapter."""
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    missing = sorted(set(target_modules) - module_leaf_names(model.encoder))
    if not target_modules or missing:
        raise ValueError(
            f"target_modules {list(target_modules)!r}: {missing or 'empty'} not in the encoder; "
            f"choose among e.g. 'query', 'key', 'value', 'dense' (BERT) or 'q_proj', 'v_proj', 'fc1' (ViT)"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(model.seed)
        inject_adapter_in_model(config, model.encoder)
    model.to(device)
    for name, param in model.named_parameters():
        param.requires_grad_(_is_trainable(name))
    return model


def _is_trainable(name: str) -> bool:
    return name.startswith("head.") or ".lora_A." in name or ".lora_B." in name


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA A/B and head parameters as detached float32 CPU clones with sorted keys: a snapshot safe to send,
    average and store while the model keeps training."""
    return {
        name: param.detach().float().cpu().clone()
        for name, param in sorted(model.named_parameters())
        if param.requires_grad
    }


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable parameters; the key set and shapes must match exactly, so a state
    from a different rank or target set fails loudly instead of half-loading."""
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    check_state(params, state)
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def check_state(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
    """ValueError unless `state` has exactly the keys and shapes of `expected`."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"state keys do not match the model's trainable parameters: missing {missing[:3]}, unexpected "
            f"{extra[:3]}; build the state with trainable_state() from a model with the same LoRA config"
        )
    for name, value in state.items():
        if value.shape != expected[name].shape:
            raise ValueError(
                f"state[{name!r}] has shape {tuple(value.shape)}, the model expects {tuple(expected[name].shape)}; "
                f"check the LoRA rank"
            )


def forward_with_state(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Logits with `state` standing in for the trainable parameters, leaving the model's own untouched: one shared
    frozen base serves every client, and the call is a pure function of `state` (ready for torch.func.vmap)."""
    return torch.func.functional_call(model, dict(state), (input_ids, attention_mask), strict=False)


def state_num_values(state: Mapping[str, torch.Tensor]) -> int:
    """Number of scalars in a state: what rank, targets and head size cost on the air."""
    return sum(value.numel() for value in state.values())


def upload_bits(state: Mapping[str, torch.Tensor], bits_per_value: int = 32) -> int:
    """What a client sends up, in bits on the air (payload only, no protocol overhead)."""
    if bits_per_value < 1:
        raise ValueError(f"bits_per_value must be a positive integer, got {bits_per_value}")
    return state_num_values(state) * bits_per_value


@dataclass(frozen=True)
class RankProfile:
    """How a trainable state's size depends on its LoRA rank: values = fixed_values + per_rank_values·rank."""

    rank: int
    fixed_values: int  # everything that is not a LoRA matrix (the head)
    per_rank_values: int  # one row of every A (its input width) plus one column of every B (its output width)
    adapted_modules: int  # LoRA-adapted linear layers (A matrices)


def rank_profile(state: Mapping[str, torch.Tensor]) -> RankProfile:
    """The state's rank, and its size as an affine function of the rank (what an adapter costs on the air)."""
    a = [value for name, value in state.items() if is_lora_a(name)]
    b = [value for name, value in state.items() if is_lora_b(name)]
    fixed = sum(value.numel() for name, value in state.items() if not (is_lora_a(name) or is_lora_b(name)))
    per_rank = sum(value.shape[1] for value in a) + sum(value.shape[0] for value in b)
    return RankProfile(state_rank(state), fixed, per_rank, len(a))


def is_lora_a(name: str) -> bool:
    return ".lora_A." in name


def is_lora_b(name: str) -> bool:
    return ".lora_B." in name


def state_rank(state: Mapping[str, torch.Tensor]) -> int:
    """The LoRA rank of a state (rows of its A matrices); ValueError if the A matrices disagree."""
    ranks = {value.shape[0] for name, value in state.items() if is_lora_a(name)}
    if len(ranks) != 1:
        raise ValueError(f"state has LoRA A matrices of ranks {sorted(ranks)}; expected exactly one rank")
    return ranks.pop()


def resize_state(state: Mapping[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The state at `rank`: A (r, in) keeps / zero-pads its first `rank` rows, B (out, r) its first `rank` columns,
    the head is shared as is. Truncation hands a low-rank client the leading part of the global adapter, padding
    lines client adapters up for HetLoRA's average (Cho et al., 2024); padded entries are exactly 0."""
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    resized = {}
    for name, value in state.items():
        if is_lora_a(name):
            value = value[:rank] if rank <= value.shape[0] else F.pad(value, (0, 0, 0, rank - value.shape[0]))
        elif is_lora_b(name):
            value = value[:, :rank] if rank <= value.shape[1] else F.pad(value, (0, rank - value.shape[1]))
        resized[name] = value.clone()
    return resized


def flatten_state(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """All values of a state as one 1-D float32 vector in sorted-key order: the payload as a codec or a
    sparsifier sees it."""
    return torch.cat([state[name].detach().reshape(-1).float().cpu() for name in sorted(state)])


def unflatten_state(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of flatten_state: cut `flat` back into tensors shaped like `like` (sorted keys)."""
    expected = state_num_values(like)
    if flat.dim() != 1 or flat.numel() != expected:
        raise ValueError(
            f"flat must be a 1-D vector of {expected} values (flatten_state of a state shaped like `like`), "
            f"got shape {tuple(flat.shape)}"
        )
    names = sorted(like)
    pieces = torch.split(flat, [like[name].numel() for name in names])
    return {name: piece.reshape(like[name].shape).clone() for name, piece in zip(names, pieces, strict=True)}
