"""Batched greedy generation for a VideoLLM: left-padded inputs_embeds, KV cache, one `generate` call per batch.

VTimeLLM answered one query at a time; here queries of similar prompt length are batched (sorted by length, then
restored to input order). Each prompt is `VideoLLM.embed` (text embeddings with the projected frame rows spliced in),
left-padded with zero vectors under attention mask 0, so every row's last position is its assistant prefix and the
new tokens line up. Greedy decoding gives the same answers as one-at-a-time generation (the benchmark asserts it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Query:
    """One generation request: prompt ids (with the video sentinel) and the video's features (N, D)."""

    prompt_ids: list[int]
    features: np.ndarray


def _batch_embeds(model, queries: Sequence[Query]) -> tuple[torch.Tensor, torch.Tensor]:
    embs = [model.embed(q.prompt_ids, torch.from_numpy(np.asarray(q.features, dtype=np.float32))) for q in queries]
    width = max(e.shape[0] for e in embs)
    inputs = embs[0].new_zeros((len(embs), width, embs[0].shape[1]))
    mask = torch.zeros((len(embs), width), dtype=torch.long, device=inputs.device)
    for b, e in enumerate(embs):
        inputs[b, width - e.shape[0]:] = e
        mask[b, width - e.shape[0]:] = 1
    return inputs, mask


def _decode(tokenizer, row: torch.Tensor) -> str:
    ids = row.tolist()
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[:ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.inference_mode()
def generate_batch(model, queries: Sequence[Query], max_new_tokens: int) -> list[str]:
    """Greedy answers for one batch (inputs_embeds only: `generate` returns just the new tokens)."""
    inputs, mask = _batch_embeds(model, queries)
    tok = model.tokenizer
    out = model.llm.generate(inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, use_cache=True, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    return [_decode(tok, row) for row in out]


def generate(model, queries: Sequence[Query], batch_size: int, max_new_tokens: int, progress=None) -> list[str]:
    """Answers in input order; batches are formed over queries sorted by prompt length to limit padding.

    `progress(n_done)` is called after each batch.
    """
    order = sorted(range(len(queries)), key=lambda i: len(queries[i].prompt_ids))
    answers: list[str | None] = [None] * len(queries)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, answer in zip(idx, generate_batch(model, [queries[i] for i in idx], max_new_tokens)):
            answers[i] = answer
        if progress is not None:
            progress(len(idx))
    return answers  # type: ignore[return-value]
