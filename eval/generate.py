"""Greedy generation for a VideoLLM: one query at a time (VTimeLLM's way) or batched with a shared video prefix.

A prompt is `system + USER: <video>` followed by the query text and the assistant prefix. Every query of one video
shares the part up to and including the video rows (~140 of ~160 positions for a grounding query), so the batched
path (`generate`) runs that prefix once per distinct video and copies its KV cache to the video's queries, then runs
only each query's own text. Rows leave the batch as soon as they emit EOS, so a batch costs what its live rows cost.
Positions and masks are exactly those of a single unpadded prompt (pads sit between prefix and query text, masked and
skipped by the position ids), so greedy answers equal one-at-a-time `transformers.generate` answers
(bench/bench_eval.py and tests/eval/test_generate.py assert it).

`generate_batch` is the plain `transformers.generate` path (left padding, KV cache): vtl-chat and the benchmark's
VTimeLLM-style baseline use it.

An answer ends at EOS; in the `chatglm3` format also at `<|user|>` (`stop_ids`), as VTimeLLM's GLM inference stops,
since a ChatGLM3 model ends its turn by opening the next user turn; in the `chat_template` format also at the
template's end-of-turn token (Phi-3's `<|end|>` is not its tokenizer's EOS).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from pipeline.contract.conversation import VIDEO_TOKEN_INDEX


@dataclass(frozen=True)
class Query:
    """One generation request: prompt ids (with the video sentinel) and the video's features (N, D)."""

    prompt_ids: list[int]
    features: np.ndarray


def _features(model, q: Query) -> torch.Tensor:
    return torch.from_numpy(np.asarray(q.features, dtype=np.float32))


def _batch_embeds(model, queries: Sequence[Query]) -> tuple[torch.Tensor, torch.Tensor]:
    embs = [model.embed(q.prompt_ids, _features(model, q)) for q in queries]
    return _left_pad(embs)


def _left_pad(embs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(e.shape[0] for e in embs)
    inputs = embs[0].new_zeros((len(embs), width, embs[0].shape[1]))
    mask = torch.zeros((len(embs), width), dtype=torch.long, device=inputs.device)
    for b, e in enumerate(embs):
        inputs[b, width - e.shape[0]:] = e
        mask[b, width - e.shape[0]:] = 1
    return inputs, mask


def stop_ids(model) -> list[int]:
    """Token ids that end an answer in the model's conversation format (pipeline.contract.stops)."""
    from pipeline.contract.stops import answer_stop_ids

    return answer_stop_ids(model.tokenizer, getattr(model, "conv_format", None))


def _decode(tokenizer, ids: list[int], stops: list[int]) -> str:
    end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True).strip()


@torch.inference_mode()
def generate_batch(model, queries: Sequence[Query], max_new_tokens: int) -> list[str]:
    """Greedy answers through `transformers.generate` (inputs_embeds only: it returns just the new tokens)."""
    inputs, mask = _batch_embeds(model, queries)
    tok, stops = model.tokenizer, stop_ids(model)
    out = model.llm.generate(inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, use_cache=True, pad_token_id=tok.pad_token_id,
                             eos_token_id=stops if len(stops) > 1 else tok.eos_token_id)
    return [_decode(tok, row.tolist(), stops) for row in out]


def _split(q: Query) -> tuple[tuple[int, ...], list[int]]:
    """(prefix ids up to and including the video sentinel, the query's own ids after it)."""
    ids = list(q.prompt_ids)
    cut = ids.index(VIDEO_TOKEN_INDEX) + 1 if VIDEO_TOKEN_INDEX in ids else 0
    return tuple(ids[:cut]), ids[cut:]


def _video_key(q: Query) -> tuple:
    prefix, _ = _split(q)
    feats = np.ascontiguousarray(q.features)
    return prefix, feats.shape, hashlib.blake2b(feats.tobytes(), digest_size=16).digest()


def _rows(buf: torch.Tensor, n: int, idx: torch.Tensor) -> torch.Tensor:
    """A buffer of rows `idx` of `buf`, copying only the first `n` positions (the filled part)."""
    out = buf.new_empty((len(idx), *buf.shape[1:]))
    torch.index_select(buf[:, :, :n], 0, idx, out=out[:, :, :n])
    return out


def _static_layer_class(capacity: int):
    """A KV-cache layer over one buffer of `capacity` positions, allocated at its first update and written in place.

    transformers' DynamicLayer concatenates the whole cache at every step (a copy per token per layer: the largest
    cost of batched decoding on CPU once the prefix is shared); the caller knows the final length (prefix + text +
    max_new_tokens), so the buffer never grows. `keys`/`values` are the filled part, as in DynamicLayer.
    """
    from transformers.cache_utils import DynamicLayer

    class StaticLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states):
            super().lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:2], capacity, key_states.shape[-1])
            self._k, self._v, self._n = key_states.new_empty(shape), value_states.new_empty(shape), 0

        def _view(self):
            self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            add = key_states.shape[-2]
            if self._n + add > capacity:
                raise RuntimeError(f"the KV cache holds {capacity} positions; {self._n + add} were written")
            self._k[:, :, self._n:self._n + add] = key_states
            self._v[:, :, self._n:self._n + add] = value_states
            self._n += add
            self._view()
            return self.keys, self.values

        def reorder_cache(self, beam_idx):  # rows may repeat: a prefix row is copied to each query of its video
            if self.is_initialized:
                idx = beam_idx.to(self._k.device)
                self._k, self._v = _rows(self._k, self._n, idx), _rows(self._v, self._n, idx)
                self._view()

        batch_select_indices = reorder_cache

    return StaticLayer


def _new_cache(llm, capacity: int) -> tuple[str, object]:
    """(the forward keyword that takes a cache in this transformers version, an empty cache of `capacity`)."""
    import inspect

    from transformers.cache_utils import Cache

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    word = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    return word, Cache(layer_class_to_replicate=_static_layer_class(capacity))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class _Batch:
    """Decoding state of the live rows: their cache, the padding mask over the whole capacity, last positions.

    The mask (True = attend) is built once with the columns a row will write later already True, so each step passes
    a view of its first `n` columns instead of concatenating a column. With SDPA the view is passed as the 4-D mask
    SDPA takes (transformers passes a 4-D mask through instead of rebuilding it from the 2-D one every step); other
    attention implementations (flash-attn's varlen path, eager's additive mask) get the 2-D view.
    """

    cache: object
    word: str
    mask: torch.Tensor  # (B, capacity) bool
    four_d: bool  # the model attends with SDPA
    last: torch.Tensor  # (B,) position of each row's last token
    rows: list[int]  # index of each live row in the caller's queries
    n: int  # positions in the cache

    def keep(self, js: list[int]) -> None:
        idx = torch.tensor(js, device=self.mask.device)
        self.cache.reorder_cache(idx)
        self.mask, self.last, self.rows = self.mask[idx], self.last[idx], [self.rows[j] for j in js]

    def step_mask(self) -> torch.Tensor:
        return self.mask[:, None, None, :self.n] if self.four_d else self.mask[:, :self.n]


def _prefill(model, queries: Sequence[Query], keys: Sequence[tuple], max_new_tokens: int):
    """Runs each distinct prefix once, copies its cache to its queries, runs their own text: (_Batch, logits)."""
    llm = model.llm
    distinct = list(dict.fromkeys(keys))
    owner = torch.tensor([distinct.index(k) for k in keys])
    first = [keys.index(k) for k in distinct]
    pre_embs = [model.embed(list(distinct[j][0]), _features(model, queries[first[j]])) for j in range(len(distinct))]
    no_rows = torch.zeros((0, queries[0].features.shape[-1]))
    text, text_mask = _left_pad([model.embed(_split(q)[1], no_rows) for q in queries])
    inputs, pre_mask = _left_pad(pre_embs)
    width = pre_mask.shape[1] + text_mask.shape[1]
    word, cache = _new_cache(llm, width + max_new_tokens)
    llm(inputs_embeds=inputs, attention_mask=pre_mask, position_ids=_positions(pre_mask), use_cache=True,
        logits_to_keep=1, **{word: cache})
    cache.reorder_cache(owner.to(inputs.device))
    # each query's own text, padded on its left (between prefix and text: masked, skipped by the positions)
    mask2d = torch.cat([pre_mask[owner.to(pre_mask.device)], text_mask], dim=1).bool()
    pos = _positions(mask2d.long())[:, -text.shape[1]:]
    four_d = getattr(llm.config, "_attn_implementation", None) == "sdpa"
    attend = mask2d
    if four_d:  # what transformers builds for SDPA: causal within the text, padding columns closed
        causal = torch.arange(width, device=mask2d.device)[None, :] <= \
            torch.arange(width - text.shape[1], width, device=mask2d.device)[:, None]
        attend = mask2d[:, None, None, :] & causal[None, None]
    out = llm(inputs_embeds=text, attention_mask=attend, position_ids=pos, use_cache=True, logits_to_keep=1,
              **{word: cache})
    mask = mask2d.new_ones((len(queries), width + max_new_tokens))
    mask[:, :width] = mask2d
    return _Batch(cache, word, mask, four_d, pos[:, -1], list(range(len(queries))), width), out.logits[:, -1]


@torch.inference_mode()
def generate_shared(model, queries: Sequence[Query], max_new_tokens: int, keys: Sequence[tuple] | None = None
                    ) -> list[str]:
    """Greedy answers for one batch, running each distinct video prefix once (see the module docstring).

    `keys`: the queries' `_video_key`s when the caller has them already.
    """
    llm, tok, stops = model.llm, model.tokenizer, set(stop_ids(model))
    keys = [_video_key(q) for q in queries] if keys is None else list(keys)
    if not all(_split(q)[1] for q in queries):
        raise ValueError("a prompt ends at its video rows; generation needs text after them (the assistant prefix)")
    if any(not k[0] for k in keys):  # no video in the prompt: nothing to share
        return generate_batch(model, queries, max_new_tokens)
    batch, logits = _prefill(model, queries, keys, max_new_tokens)
    answers: list[list[int]] = [[] for _ in queries]
    embed_tokens = llm.get_input_embeddings()
    for step in range(max_new_tokens):
        nxt = logits.argmax(dim=-1)
        keep = []
        for j, (row, token) in enumerate(zip(batch.rows, nxt.tolist())):
            if token not in stops:
                answers[row].append(token)
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(batch.rows):  # finished rows leave the batch
            batch.keep(keep)
            nxt = nxt[torch.tensor(keep, device=nxt.device)]
        batch.last, batch.n = batch.last + 1, batch.n + 1
        out = llm(inputs_embeds=embed_tokens(nxt)[:, None], attention_mask=batch.step_mask(),
                  position_ids=batch.last[:, None], use_cache=True, logits_to_keep=1, **{batch.word: batch.cache})
        logits = out.logits[:, -1]
    return [_decode(tok, a, stops) for a in answers]


def generate(model, queries: Sequence[Query], batch_size: int, max_new_tokens: int, progress=None) -> list[str]:
    """Answers in input order. Batches group the queries of one video together (its prefix runs once), then by length.

    `progress(n_done)` is called after each batch.
    """
    keys = [_video_key(q) for q in queries]
    rank = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    order = sorted(range(len(queries)), key=lambda i: (rank[keys[i]], len(queries[i].prompt_ids)))
    answers: list[str | None] = [None] * len(queries)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [queries[i] for i in idx]
        for i, answer in zip(idx, generate_shared(model, batch, max_new_tokens, [keys[i] for i in idx])
                             if batch_size > 1 else generate_batch(model, batch, max_new_tokens)):
            answers[i] = answer
        if progress is not None:
            progress(len(idx))
    return answers  # type: ignore[return-value]
