"""Accuracy curve of federated MiniLM + LoRA on the shipped SST-2 data, the learning side of the default scenario
without the network: every round `--participants` random clients (of 200 IID shards of 64 sentences) run two local
AdamW steps from the global adapter in one batched pass, FedAvg merges them, and the global adapter is evaluated
on the whole SST-2 dev set (872 sentences) every `--eval-every` rounds. `--precision` as a scenario's
`learning.precision` ("auto": bf16 where the hardware has it, with the frozen base stored in bf16).

    .venv/bin/python -m benchmarks.minilm_sst2 [--rounds 30] [--participants 10] [--lr 3e-3] [--precision auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not benchmarks/mobility.py

from models.aggregate import fedavg
from models.backbone import load_backbone
from models.data import encode, load_dataset, partition_iid, subset
from models.device import PRECISIONS, compute_dtype, store_frozen
from models.evaluate import evaluate
from models.lora import add_lora, trainable_state
from models.trainer import LocalTrainer

CLIENTS, SAMPLES_PER_CLIENT, MAX_LENGTH, BATCH, LOCAL_STEPS, SEED = 200, 64, 64, 16, 2, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    model, tokenizer = load_backbone("minilm", 2, seed=SEED)
    add_lora(model, rank=8, alpha=16.0, dropout=0.0, target_modules=["query", "value"])
    dtype = compute_dtype(next(model.parameters()).device, args.precision)
    store_frozen(model, dtype)
    train = load_dataset("sst2", "train")
    train = subset(train, rng.permutation(len(train.labels))[: CLIENTS * SAMPLES_PER_CLIENT])
    shards = partition_iid(CLIENTS * SAMPLES_PER_CLIENT, CLIENTS, rng)
    trainer = LocalTrainer(model, encode(train, tokenizer, MAX_LENGTH), shards, batch_size=BATCH, lr=args.lr,
                           optimizer="adamw", seed=SEED, precision=args.precision)
    dev = load_dataset("sst2", "dev")
    dev_data = encode(dev, tokenizer, MAX_LENGTH)
    state = trainable_state(model)
    accuracy, loss = evaluate(model, state, dev_data, dtype=dtype)
    print(f"SST-2 dev majority rate {np.bincount(dev.labels).max() / len(dev.labels):.3f}; "
          f"{args.participants} of {CLIENTS} clients per round, {LOCAL_STEPS} AdamW steps of {BATCH}, lr {args.lr}, "
          f"{str(dtype).removeprefix('torch.')}")
    print(f"{'round':>5} | {'dev accuracy':>12} | {'dev loss':>8} | {'train loss':>10} | {'wall s':>6}")
    print(f"{0:>5} | {accuracy:>12.3f} | {loss:>8.3f} | {'':>10} | {0:>6.0f}", flush=True)
    began, losses = time.perf_counter(), []
    for round_index in range(1, args.rounds + 1):
        clients = rng.choice(CLIENTS, args.participants, replace=False)
        updates = trainer.train(state, clients, LOCAL_STEPS, round_index)
        state = fedavg(updates)
        losses.append(np.mean([update.loss for update in updates]))
        if round_index % args.eval_every == 0 or round_index == args.rounds:
            accuracy, loss = evaluate(model, state, dev_data, dtype=dtype)
            print(f"{round_index:>5} | {accuracy:>12.3f} | {loss:>8.3f} | {np.mean(losses[-args.eval_every:]):>10.3f} "
                  f"| {time.perf_counter() - began:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
