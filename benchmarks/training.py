"""Clients trained at once vs a plain loop of per-client peft models, on the same work.

MiniLM (all-MiniLM-L6-v2) + LoRA rank 8 on query/value, AdamW, every client a mini-batch of 16 sequences of 64 real
tokens (SST-2 sentences run together, so no padding can be trimmed) for `--steps` local steps. The ways to do it:

- loop: the naive way, per client a deep copy of the peft model loaded with the global adapter, its own AdamW, its
  steps, one client after another, in float32 (torch's default);
- loop-bf16: the same loop under bf16 autocast, to separate what precision buys from what the trainer buys;
- batched-fp32: models.trainer.LocalTrainer.train in float32: clients' adapters stacked, one forward/backward per
  step for each pass of clients (on a CPU, passes of at most 2,048 tokens);
- batched: the same at precision "auto", what a scenario runs: bf16 matrix products where the CPU has AVX512-BF16
  or AMX (or on a GPU), float32 elsewhere, with the frozen base stored in that dtype (models.device.store_frozen).

Each (method, clients) measurement runs in a fresh subprocess, so its peak memory (ru_maxrss) is its own: reported
as the growth over the process once the model and data are loaded. Prints client-steps per second, the speed of each
way relative to the float32 loop and the peak memories; all ratios come from this one run.

What to expect on a CPU: all ways do the same floating-point work, and one client's 16 x 64 = 1,024 tokens already
make GEMMs big enough to run near the cores' peak, so stacking clients saves only the loop's per-client overhead
(base copy, optimiser, Python) and, past the caches, costs page faults and cache misses: hence capped passes. The
large factor on such a CPU is bf16 (a GEMM 4.2x faster than float32 here). On a GPU, where one client's batch
leaves most of the device idle, stacking itself is the gain.

    .venv/bin/python -m benchmarks.training [--clients 8 16 32] [--steps 2] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, not benchmarks/mobility.py

from models.backbone import load_backbone
from models.data import TextClassificationData, encode, load_dataset, partition_iid
from models.device import autocast, compute_dtype, store_frozen
from models.lora import add_lora, load_trainable_state, trainable_state
from models.trainer import LocalTrainer, batch_indices

BATCH, TOKENS, RANK, LR, SEED = 16, 64, 8, 3e-3, 0
METHODS = ("loop", "loop-bf16", "batched-fp32", "batched")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(clients: int):
    model, tokenizer = load_backbone("minilm", 2, seed=SEED)
    add_lora(model, rank=RANK, alpha=2.0 * RANK, dropout=0.0, target_modules=["query", "value"])
    sst2 = load_dataset("sst2", "train")
    samples = clients * BATCH * 4
    texts = [" ".join(sst2.texts[i : i + 32]) for i in range(0, 32 * samples, 32)]
    data = encode(TextClassificationData(texts, sst2.labels[: 32 * samples : 32], 2), tokenizer, TOKENS)
    assert bool(data.attention_mask.all()), "every sequence must fill all 64 tokens"
    shards = partition_iid(samples, clients, np.random.default_rng(SEED))
    return model, data, shards


def _loop(model, data, shards, start, clients, steps, round_index, dtype) -> None:
    """The naive baseline: a deep copy of the peft model per client, trained alone."""
    for client in clients:
        batch_seq, _ = np.random.SeedSequence([SEED, round_index, client]).spawn(2)
        batches = batch_indices(shards[client], BATCH, steps, np.random.default_rng(batch_seq))
        own = copy.deepcopy(model)
        load_trainable_state(own, start)
        optimizer = torch.optim.AdamW([p for p in own.parameters() if p.requires_grad], lr=LR)
        own.train()
        for rows in batches:
            rows = torch.as_tensor(rows)
            with autocast("cpu", dtype):
                logits = own(data.input_ids[rows], data.attention_mask[rows])
            loss = F.cross_entropy(logits.float(), data.labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trainable_state(own)  # what the client uploads
        del own, optimizer


def worker(method: str, clients: int, steps: int, repeats: int) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    model, data, shards = _setup(clients)
    precision = "float32" if method == "batched-fp32" else "auto"
    if method == "batched":
        store_frozen(model, compute_dtype("cpu", precision))  # as a scenario does
    trainer = LocalTrainer(model, data, shards, batch_size=BATCH, lr=LR, optimizer="adamw", seed=SEED,
                           precision=precision)
    start = trainable_state(model)
    dtype = {"loop": torch.float32, "loop-bf16": torch.bfloat16}.get(method, trainer.dtype)

    def run(who: list[int], round_index: int) -> None:
        if method.startswith("batched"):
            trainer.train(start, who, steps, round_index)
        else:
            _loop(model, data, shards, start, who, steps, round_index, dtype)

    base = _rss_mb()  # before the warm-up: memory the allocator keeps from it is the method's own
    run([0], 0)  # warm-up: kernel selection and thread pools are not the method's speed
    timings = []
    for repeat in range(repeats):  # the fastest of the repeats: noise from the rest of the machine only adds time
        began = time.perf_counter()
        run(list(range(clients)), 1 + repeat)
        timings.append(time.perf_counter() - began)
    seconds = min(timings)
    frozen_mb = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad) / 2**20
    return {"seconds": seconds, "client_steps_per_s": clients * steps / seconds, "peak_mb": _peak_mb() - base,
            "frozen_mb": frozen_mb, "dtype": str(dtype).removeprefix("torch.")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="4 and 8 clients, one step, one repeat: a smoke run")
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "CLIENTS", "STEPS", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, clients, steps, repeats = args.worker
        print(json.dumps(worker(method, int(clients), int(steps), int(repeats))))
        return
    counts, steps, repeats = ([4, 8], 1, 1) if args.quick else (args.clients, args.steps, args.repeats)
    print(f"MiniLM + LoRA r={RANK}, batch {BATCH} x {TOKENS} tokens, {steps} AdamW steps per client, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, fastest of {repeats}")
    print(f"{'clients':>7} | {'method':>12} | {'precision':>9} | {'client-steps/s':>14} | {'vs loop':>7} | "
          f"{'peak MB':>7} | {'MB/client':>9}")
    for clients in counts:
        result = {}
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, "--worker", method, str(clients), str(steps), str(repeats)],
                                 check=True, capture_output=True, text=True).stdout
            result[method] = json.loads(out.strip().splitlines()[-1])
        if clients == counts[0]:
            print(f"(the frozen base alone is {result['loop']['frozen_mb']:.0f} MB: what each per-client copy costs)")
        for method, measured in result.items():
            speed = measured["client_steps_per_s"]
            print(f"{clients:>7} | {method:>12} | {measured['dtype']:>9} | {speed:>14.2f} | "
                  f"{speed / result['loop']['client_steps_per_s']:>6.2f}x | {measured['peak_mb']:>7.0f} | "
                  f"{measured['peak_mb'] / clients:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
