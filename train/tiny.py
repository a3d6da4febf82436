"""`--llm tiny-random` in vtl-train: the recipe of infra.tiny_llm, its tokenizer trained on this command's prompt words
and the training shards' texts, saved in the checkpoint's `llm/` so `--from`, vtl-eval and vtl-chat load exactly it.

Test and CPU-demo support (DESIGN: no weights can be downloaded here), kept out of the stage recipe: train.stages
asks `base_llm` for stage 1's LLM and gets tiny-random from here or a named model from train.model.load_llm. The
shards are read as the trainer's loader reads them (held to index.json, tar headers checked by
pipeline.contract.shard_refs), so a damaged shard stops the run with that reader's one line naming it. With the same
texts and seed every process builds the same model and tokenizer.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from infra.tiny_llm import TINY_SIZE, bpe, fast_tokenizer, random_llama
from pipeline.contract.conversation import V1_SYSTEM
from pipeline.contract.provenance import TINY_RANDOM
from train.errors import RefusedValue
from train.model import load_llm, prepare_tokenizer
from train.zero3 import building_partitioned, launcher_rank

__all__ = ["TINY_SIZE", "PROMPT_TEXTS", "base_llm", "build_tiny_random", "tiny_llm", "tiny_texts", "train_bpe",
           "train_tokenizer"]

# Words every prompt format adds, so a tokenizer trained on captions alone still encodes prompts compactly.
PROMPT_TEXTS = (V1_SYSTEM, "USER: ASSISTANT:", "From 00 to 99.", "0123456789")


def train_bpe(texts: Iterable[str], vocab_size: int = 512):
    """The raw `tokenizers.Tokenizer`: BPE on the prompt words plus `texts` (infra.tiny_llm.bpe)."""
    return bpe(list(PROMPT_TEXTS) + [t for t in texts if t], vocab_size)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, model_max_length: int = 4096):
    """`train_bpe` wrapped as a transformers fast tokenizer (`<s>`, `</s>`, `<unk>`, `<pad>`; right padding)."""
    return fast_tokenizer(list(PROMPT_TEXTS) + [t for t in texts if t], vocab_size, model_max_length)


def build_tiny_random(texts: Iterable[str], out_dir: str | Path | None = None, seed: int = 0, vocab_size: int = 512,
                      **size):
    """A small LLaMA-config model with random weights (fixed seed) and a BPE tokenizer trained on `texts`.

    With `out_dir`, both are saved there and reloaded with AutoModelForCausalLM/AutoTokenizer, so what is returned is
    exactly what a later `--from` or `load_for_inference` reads back.
    """
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    llm = random_llama(tokenizer, seed, **size)
    if out_dir is None:
        return llm, prepare_tokenizer(tokenizer)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return load_llm(str(out_dir), attn="sdpa")


def tiny_texts(shard_dir: str | Path, limit: int = 20000) -> list[str]:
    """Texts to train the tiny-random tokenizer on: conversation turns and captions of the first `limit` samples.

    Read like the trainer reads them; a damaged shard or sample is a RefusedValue naming it (vtl-train: one line).
    """
    texts: list[str] = []
    try:
        for i, (meta, conversation) in enumerate(_checked_records(shard_dir)):
            if i >= limit:
                break
            texts += [t["value"] for t in (conversation or {}).get("turns", [])] + [meta.get("caption") or ""]
            texts += [e.get("caption", "") for e in meta.get("events") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # ShardError, a bad tar header, bad JSON
        raise RefusedValue(f"tiny-random tokenizer: {err}") from None
    return [t for t in texts if t]


def _checked_records(shard_dir: str | Path):
    """(meta, conversation or None) of every sample, shards held to index.json, headers checked (shard_refs)."""
    from infra import storage
    from pipeline.contract.checked import check_files, load_index
    from pipeline.contract.shard_refs import iter_sample_refs
    from pipeline.contract.shards import CONVERSATION, META, require_members

    index = load_index(shard_dir)
    check_files(shard_dir, index)
    for entry in index["shards"]:
        path = storage.join(shard_dir, entry["name"])
        for members in iter_sample_refs(path):
            require_members(members)
            try:
                conversation = json.loads(members[CONVERSATION]) if CONVERSATION in members else None
                yield json.loads(members[META]), conversation
            except ValueError as err:
                raise ValueError(f"{path}: sample {members['__key__']}: not JSON ({err})") from None


def base_llm(cfg, texts: Iterable[str] | None, dtype: torch.dtype | None):
    """Stage 1's (LLM, tokenizer, provenance): tiny-random built here and saved in out/llm, or `--llm` loaded."""
    from train.checkpoint import LLM_DIR

    if cfg.llm == TINY_RANDOM:
        saved = Path(cfg.out) / LLM_DIR
        llm, tok = tiny_llm(cfg, texts, dtype, saved)
        return llm, tok, {"llm_source": TINY_RANDOM, "llm_dir": str(saved), "base_adapters": []}
    llm, tok = load_llm(cfg.llm, dtype=dtype, attn=cfg.attn)
    return llm, tok, {"llm_source": cfg.llm, "llm_dir": None, "base_adapters": []}


def tiny_llm(cfg, texts: Iterable[str] | None, dtype: torch.dtype | None, saved: Path):
    """Stage 1's tiny-random (LLM, tokenizer), saved in `saved` (the checkpoint's `llm/`) so `--from` continues from it.

    A resumed run reloads what it saved; a ZeRO-3 build goes through `_tiny_partitioned`; otherwise every rank builds
    the same model from the same seed and texts (`cfg.shards`' when `texts` is None) and rank 0 saves it.
    """
    if getattr(cfg, "resume", False) and saved.is_dir():
        return load_llm(str(saved), dtype=dtype, attn="sdpa")
    if building_partitioned():
        return _tiny_partitioned(cfg, texts, saved, dtype)
    texts = list(texts) if texts is not None else tiny_texts(cfg.shards)
    llm, tok = build_tiny_random(texts, seed=cfg.seed)
    if launcher_rank() == 0:
        _save_llm(llm, tok, saved)
    return (llm.to(dtype) if dtype is not None else llm), tok


def _tiny_partitioned(cfg, texts: Iterable[str] | None, saved: Path, dtype: torch.dtype | None):
    """ZeRO-3: rank 0 builds tiny-random whole (it saves it anyway), then every rank loads it back partitioned.

    Loading goes through `from_pretrained`, i.e. `deepspeed.zero.Init` (train.zero3.partitioned_build), and the
    saved float32 weights read back exactly, so the model equals the one an unpartitioned run builds from the same
    seed. Only rank 0 ever holds the whole (tiny) model; `out` must be visible to every rank, as for --resume.
    """
    import torch.distributed as dist

    if dist.get_rank() == 0:
        texts = list(texts) if texts is not None else tiny_texts(cfg.shards)
        llm, tok = build_tiny_random(texts, seed=cfg.seed)
        _save_llm(llm, tok, saved)
        del llm
    dist.barrier()
    return load_llm(str(saved), dtype=dtype, attn="sdpa")


def _save_llm(llm: nn.Module, tokenizer, target: Path) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    llm.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
