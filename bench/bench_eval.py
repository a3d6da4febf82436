"""Benchmark: batched evaluation generation vs one query at a time (VTimeLLM's eval loop), same model and queries.

    .venv/bin/python bench/bench_eval.py [--queries 64] [--batch-size 16] [--max-new-tokens 32] [--repeats 3]

Same random-weight LLaMA-config model (projector included, 100 video rows per prompt, Vicuna v1 prompts of
VTimeLLM's grounding query), greedy decoding, same max_new_tokens. One at a time is what a VTimeLLM user runs: one
`transformers.generate` call per query (`eval.generate.generate_batch` with one query); batched is what vtl-eval runs
(`eval.generate.generate`). The answers must be identical (asserted on every repeat).

On a shared machine one run can be slowed by a neighbour's burst, so the two modes run back to back, alternating,
`--repeats` times after a warm-up of each; the figures are each mode's best (least disturbed) run, the load average
is printed before and after every run, and so are the process CPU seconds (torch runs on `--threads`, so CPU seconds
exclude the time the process waited for a core). The last line is `ratio=X.XX`: best one-at-a-time wall seconds over
best batched wall seconds.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCES = ["a man opens the door", "the person pours water into a glass", "someone puts a book on a shelf",
             "a woman is cooking at the stove", "the dog runs across the yard", "a child throws a ball",
             "he sits down on the sofa and reads", "two people shake hands in the kitchen"]


def build(args):
    import torch

    from pipeline.contract.conversation import generation_prompt
    from train.model import VideoLLM, new_projector
    from train.tiny import build_tiny_random

    texts = [f"During which frames can we see {s}?" for s in SENTENCES] + \
            [f"From {i:02d} to {i + 20:02d}, {s}." for i, s in enumerate(SENTENCES)]
    llm, tok = build_tiny_random(texts * 4, seed=0, vocab_size=args.vocab, hidden_size=args.hidden,
                                 intermediate_size=args.hidden * 2, num_hidden_layers=args.layers,
                                 num_attention_heads=args.heads, num_key_value_heads=args.heads)
    model = VideoLLM(llm, tok, new_projector(768, args.hidden), "v1").eval()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = model.to(device=device, dtype=torch.float32)
    import numpy as np

    from eval.generate import Query

    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((100, 768)).astype(np.float16) for _ in range(max(1, args.queries // 4))]
    queries = []
    for i in range(args.queries):
        q = f"During which frames can we see {' and then '.join(SENTENCES[i % 8:i % 8 + 1 + i % 3])}?"
        ids = generation_prompt([{"from": "human", "value": f"<video>\n{q}"}], tok, "v1")
        queries.append(Query(ids, videos[i % len(videos)]))
    return model, queries, device


def answer(model, queries, batch_size, max_new_tokens):
    from eval.generate import generate, generate_batch

    if batch_size == 1:  # VTimeLLM's loop: one transformers.generate call per query
        return [generate_batch(model, [q], max_new_tokens)[0] for q in queries]
    return generate(model, queries, batch_size, max_new_tokens)


def timed(model, queries, batch_size, max_new_tokens, device):
    """(answers, wall seconds, process CPU seconds, load average before and after)."""
    import torch

    load = os.getloadavg()
    start, cpu = time.perf_counter(), time.process_time()
    answers = answer(model, queries, batch_size, max_new_tokens)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return answers, time.perf_counter() - start, time.process_time() - cpu, (load[0], os.getloadavg()[0])


def measure(model, queries, args, device) -> dict[int, list[tuple]]:
    """Alternating runs of each batch size; every batched answer list is checked against one at a time."""
    sizes = (1, args.batch_size)
    for b in sizes:  # warm-up: kernels, allocator, lazy imports
        answer(model, queries[:2 * b], b, 4)
    runs: dict[int, list[tuple]] = {b: [] for b in sizes}
    for rep in range(args.repeats):
        for b in sizes:
            answers, wall, cpu, load = timed(model, queries, b, args.max_new_tokens, device)
            runs[b].append((wall, cpu, load))
            print(f"repeat {rep + 1}, batch {b}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                  f"load {load[0]:.2f} -> {load[1]:.2f}", flush=True)
            if b == 1:
                single = answers
            elif answers != single:
                raise SystemExit("batched greedy answers differ from one-at-a-time answers")
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each mode (best is reported)")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, queries, device = build(args)
    load_before = os.getloadavg()
    runs = measure(model, queries, args, device)
    report(runs, args, model, len(queries), device, load_before)


def report(runs, args, model, n, device, load_before) -> None:
    import torch

    load_after = os.getloadavg()
    where = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"model: LLaMA-config random weights, hidden {args.hidden}, {args.layers} layers, "
          f"vocab {len(model.tokenizer)}"
          f"; {n} grounding queries, 100 video rows each, greedy, {args.max_new_tokens} new tokens max; {where}")
    print(f"best of {args.repeats} alternating runs each (median in brackets)")
    print("| mode | batch | queries/s | wall s | CPU s |")
    print("|---|---|---|---|---|")
    best = {}
    for b, name in ((1, "one at a time (VTimeLLM)"), (args.batch_size, "batched (vtl-eval)")):
        walls, cpus = [r[0] for r in runs[b]], [r[1] for r in runs[b]]
        best[b] = (min(walls), min(cpus))
        print(f"| {name} | {b} | {n / min(walls):.2f} | {min(walls):.2f} ({statistics.median(walls):.2f}) "
              f"| {min(cpus):.2f} ({statistics.median(cpus):.2f}) |")
    paired = [a[0] / b[0] for a, b in zip(runs[1], runs[args.batch_size])]
    print(f"answers identical: True ({n} answers, every repeat)")
    print(f"paired wall ratios (each repeat's runs back to back): {' '.join(f'{r:.2f}' for r in paired)}; "
          f"CPU-seconds ratio (best): {best[1][1] / best[args.batch_size][1]:.2f}")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *load_after))
    print(f"ratio={best[1][0] / best[args.batch_size][0]:.2f}")

if __name__ == "__main__":
    main()
