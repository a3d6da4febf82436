"""Test helpers for `build-qa --generate`: a tiny LLaMA-config LLM trained in seconds on a handful of Box-4-format
dialogues (so that it writes parseable ones), and the same model with random weights (whose output is garbage)."""
from __future__ import annotations

import random
from pathlib import Path

from manifests.schema import Event
from pipeline.qa.llm_dialogues import build_prompt

CAPTIONS = ["A man walks into the room", "A woman picks up a red ball", "The dog runs across the yard",
            "Two people shake hands", "A child jumps into the pool", "The man sits down on a chair",
            "A girl waves at the camera", "The woman puts the ball in a box", "People clap their hands",
            "The boy rides a bike down the street"]


def real_captions(count: int = 48) -> list[str]:
    """Captions of real ActivityNet and DiDeMo videos the tests do not build shards from (videos 100 onwards), cut to
    8 words: the fixture LLM sees real-world wording, not only the ten captions above."""
    from support.real_data import REAL

    from manifests.readers import read_dataset

    found = []
    for name, path in (("activitynet", "activitynet_captions_train_sample.json"), ("didemo", "didemo_test_sample.json")):
        rows = read_dataset(name, REAL / path).rows[100:100 + count // 2]
        found += [" ".join(r.events[0].caption.rstrip(".").split()[:8]) for r in rows if r.events]
    return [c[0].upper() + c[1:] for c in found if c]


def _phrase(caption: str) -> str:
    return caption[0].lower() + caption[1:]


def training_dialogue(n: int, rng: random.Random, captions: list[str]) -> str:
    """A Box-4-format dialogue about `n` events: questions about when, what and what comes after."""
    lines = []
    for k in rng.sample(range(1, n + 1), min(n, 3)):
        cap = captions[k - 1]
        if rng.random() < 0.5:
            lines += [f"User: What happens from <s{k}> to <e{k}>?", f"Assistant: {cap}."]
        else:
            lines += [f"User: When does {_phrase(cap)}?", f"Assistant: From <s{k}> to <e{k}>."]
    if n > 1 and rng.random() < 0.5:
        lines += ["User: What happens at the end of the video?", f"Assistant: {captions[n - 1]}, from <s{n}> to "
                  f"<e{n}>."]
    return "\n".join(lines) + "\n"


def training_texts(count: int = 64, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, dialogue) pairs over random event lists of 1-5 events."""
    rng = random.Random(seed)
    pool = CAPTIONS + real_captions()
    pairs = []
    for _ in range(count):
        n = rng.randint(1, 5)
        captions = rng.sample(pool, n)
        events = [Event(float(i), float(i + 1), c) for i, c in enumerate(captions)]
        pairs.append((build_prompt(events), training_dialogue(n, rng, captions)))
    return pairs


def _model(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=2048, vocab_size=len(tokenizer),
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def build_dialogue_llms(out: Path, steps: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """(trained, random) model folders (with `steps=0` both are random). The tokenizer (vocab 2000, so the fixed prompt is few tokens) is trained on
    the prompts and dialogues; the model learns the dialogues only (loss masked on the prompt)."""
    import torch

    from train.tiny import train_tokenizer

    pairs = training_texts(seed=seed)
    tokenizer = train_tokenizer([p + d for p, d in pairs], vocab_size=2000)
    random_dir, trained_dir = out / "random-llm", out / "trained-llm"
    for folder in (random_dir, trained_dir):
        _model(tokenizer, seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    if not steps:
        return trained_dir, random_dir
    model = _model(tokenizer, seed)
    examples = []
    for prompt, dialogue in pairs:
        # the prompt's ids exactly as the generator sees them, then the dialogue as a chunk of its own
        p = tokenizer(prompt)["input_ids"]
        d = tokenizer(dialogue, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append((p + d, [-100] * len(p) + d))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    gen = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = gen.sample(examples, 4)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = (torch.arange(width)[None] < torch.tensor([len(i) for i, _ in batch])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(trained_dir)
    return trained_dir, random_dir
