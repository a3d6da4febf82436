"""Stand-in for a pretrained Vicuna in the CPU demo: a tiny LLaMA-config LLM whose tokenizer is trained on the
synthetic text, then trained for a few hundred steps as a plain language model on that text (no video).

It writes an ordinary Hugging Face folder (config, weights, tokenizer), which `vtl-train --llm FOLDER` loads through
the same code path as `--llm lmsys/vicuna-7b-v1.5`.

    python demo/pretrain_llm.py --out base-llm --steps 300 SHARD_DIR [SHARD_DIR ...]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path


def texts_of(shard_dirs: list[str]) -> tuple[list[str], list[tuple[list[dict], str]]]:
    """One text per conversation (turns joined, `<video>` removed) plus every caption, and each conversation with the
    format its stage trains in (stage 1 `plain`, stages 2-3 `v1`), from the training shards."""
    from pipeline.contract.shards import iter_samples

    texts, conversations = [], []
    for d in shard_dirs:
        for sample in iter_samples(d):
            conv = sample.conversation or {}
            turns = conv.get("turns", [])
            text = " ".join(t["value"].replace("<video>", "").strip() for t in turns)
            texts += [text] if text else []
            texts += [sample.meta.get("caption") or ""] + [e.get("caption", "") for e in sample.meta.get("events") or []]
            if turns:
                conversations.append((turns, "plain" if conv.get("stage") == 1 else "v1"))
    return [t for t in texts if t], conversations


def formatted_ids(conversations: list[tuple[list[dict], str]], tok) -> list[list[int]]:
    """Token ids of each conversation exactly as vtl-train builds them, the `<video>` position left out.

    A pretrained Vicuna has seen text in every chunking the formats produce: a caption right after the `<video>` line
    (`plain` tokenizes "\\n" + caption as one chunk, so its first word carries no leading space), a question after
    "USER: ". Without these the stand-in meets them for the first time in stage 1: measured on the demo's data,
    stage 1 then ended at loss 3.3 (0.5 with them), stage 2 stayed at ~0.7 and the demo's grounding stayed at chance
    (mIoU 26.2 against a bar of 38.9; 47.2 with them, demo/README.md)."""
    from pipeline.contract.conversation import VIDEO_TOKEN_INDEX, encode_many

    ids = []
    for fmt in ("plain", "v1"):
        group = [turns for turns, f in conversations if f == fmt]
        ids += [[int(t) for t in e.input_ids if t != VIDEO_TOKEN_INDEX] for e in encode_many(group, tok, fmt)]
    return ids


def _batch(rng: random.Random, texts: list[str], formatted: list[list[int]], tok, size: int) -> dict:
    """Half plain texts, half formatted conversations, right-padded to the longest (at most 256 tokens)."""
    import torch

    half = size // 2 if formatted else 0
    rows = [tok(t + tok.eos_token, truncation=True, max_length=256)["input_ids"]
            for t in rng.sample(texts, min(size - half, len(texts)))]
    rows += [ids[:256] for ids in rng.sample(formatted, min(half, len(formatted)))]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return {"input_ids": input_ids, "attention_mask": mask}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch

    from train.tiny import build_tiny_random

    torch.manual_seed(a.seed)
    texts, conversations = texts_of(a.shards)
    size = {"hidden_size": a.hidden, "intermediate_size": 2 * a.hidden, "num_hidden_layers": a.layers,
            "num_attention_heads": 4, "num_key_value_heads": 4}
    llm, tok = build_tiny_random(texts, seed=a.seed, vocab_size=1024, **size)
    formatted = formatted_ids(conversations, tok)
    opt = torch.optim.AdamW(llm.parameters(), lr=a.lr, weight_decay=0.0)
    warmup = max(1, a.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / a.steps, 1.0))))
    rng = random.Random(a.seed)
    llm.train()
    t0, losses = time.perf_counter(), []
    for step in range(a.steps):
        batch = _batch(rng, texts, formatted, tok, a.batch)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = llm(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if step % 50 == 0 or step == a.steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    (a.out / "pretrain.json").write_text(json.dumps({"texts": len(texts), "formatted": len(formatted), "steps": a.steps, "losses": losses,
                                                     "size": size, "seed": a.seed}) + "\n")
    print(f"saved {a.out} ({sum(p.numel() for p in llm.parameters()) / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    main()
