"""Benchmark: batched evaluation generation vs one query at a time (VTimeLLM's eval loop), same model and queries.

    .venv/bin/python bench/bench_eval.py [--queries 64] [--batch-size 16] [--max-new-tokens 32] [--device auto]

Both runs use `eval.generate.generate` on the same random-weight LLaMA-config model (projector included, 100 video
rows per prompt, Vicuna v1 prompts of VTimeLLM's grounding query) with greedy decoding; the answers must be
identical (asserted). Prints queries/s of each and the ratio; the last line is `ratio=X.XX`.
"""
from __future__ import annotations

import argparse
import os
import platform
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


def timed(model, queries, batch_size, max_new_tokens, device):
    import torch

    from eval.generate import generate

    generate(model, queries[:2], batch_size, 4)  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    answers = generate(model, queries, batch_size, max_new_tokens)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return answers, time.perf_counter() - start


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
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, queries, device = build(args)
    load_before = os.getloadavg()
    single, t1 = timed(model, queries, 1, args.max_new_tokens, device)
    batched, tb = timed(model, queries, args.batch_size, args.max_new_tokens, device)
    assert batched == single, "batched greedy answers differ from one-at-a-time answers"
    n = len(queries)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"model: LLaMA-config random weights, hidden {args.hidden}, {args.layers} layers, "
          f"vocab {len(model.tokenizer)}"
          f"; {n} grounding queries, 100 video rows each, greedy, {args.max_new_tokens} new tokens max; {where}")
    print("| mode | batch | queries/s | seconds |")
    print("|---|---|---|---|")
    print(f"| one at a time (VTimeLLM) | 1 | {n / t1:.2f} | {t1:.2f} |")
    print(f"| batched (vtl-eval) | {args.batch_size} | {n / tb:.2f} | {tb:.2f} |")
    print(f"answers identical: {batched == single} ({n} answers)")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg()))
    print(f"ratio={t1 / tb:.2f}")


if __name__ == "__main__":
    main()
