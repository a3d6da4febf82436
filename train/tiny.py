"""`--llm tiny-random`: a small LLaMA-config model with random weights and a BPE tokenizer trained on the shards' texts.

Test and CPU-demo support (DESIGN: no weights can be downloaded here); the recipe in train.stages reaches it through
one call, `tiny_llm`. The tokenizer is LLaMA-flavoured on purpose (Metaspace pre-tokenizer, `<s>`/`</s>`/`<unk>`), so
the conversation formats see the same kind of whitespace handling as Vicuna's SentencePiece tokenizer: a leading
space belongs to the next word. With the same texts and seed every process builds the same model and tokenizer.
"""
from __future__ import annotations

import os
import shutil
import string
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from pipeline.contract.conversation import V1_SYSTEM
from train.model import load_llm, prepare_tokenizer
from train.zero3 import building_partitioned, launcher_rank

TINY_SIZE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 4096}
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>")
# Words every prompt format adds, so a tokenizer trained on captions alone still encodes prompts compactly.
PROMPT_TEXTS = (V1_SYSTEM, "USER: ASSISTANT:", "From 00 to 99.", "0123456789")


def train_bpe(texts: Iterable[str], vocab_size: int = 512):
    """The raw `tokenizers.Tokenizer`: BPE on `texts` plus the prompt words (deterministic for the same texts).

    Every printable ASCII character is in the initial alphabet, so no ASCII text ever maps to `<unk>`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = list(PROMPT_TEXTS) + [t for t in texts if t]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Like LLaMA's SentencePiece model: digits are single tokens ("28" → "2", "8") and punctuation stands alone, so a
    # timestamp is always the same two digit tokens whatever follows it ("69." would otherwise become one token).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=list(string.printable) + ["\u2581"])
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, model_max_length: int = 4096):
    """`train_bpe` wrapped as a transformers fast tokenizer (`<s>`, `</s>`, `<unk>`, `<pad>`; right padding)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=train_bpe(texts, vocab_size), bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<video>", "<image>"],
                                   model_max_length=model_max_length, padding_side="right")


def build_tiny_random(texts: Iterable[str], out_dir: str | Path | None = None, seed: int = 0, vocab_size: int = 512,
                      **size):
    """A small LLaMA-config model with random weights (fixed seed) and a BPE tokenizer trained on `texts`.

    With `out_dir`, both are saved there and reloaded with AutoModelForCausalLM/AutoTokenizer, so what is returned is
    exactly what a later `--from` or `load_for_inference` reads back.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    cfg = LlamaConfig(**{**TINY_SIZE, **size}, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = LlamaForCausalLM(cfg)
    if out_dir is None:
        return llm, prepare_tokenizer(tokenizer)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return load_llm(str(out_dir), attn="sdpa")


def tiny_texts(shard_dir: str | Path, limit: int = 20000) -> list[str]:
    """Texts to train the tiny-random tokenizer on: conversation turns and captions of the first `limit` samples."""
    from pipeline.contract.shards import iter_samples

    texts: list[str] = []
    for i, sample in enumerate(iter_samples(shard_dir)):
        if i >= limit:
            break
        turns = (sample.conversation or {}).get("turns", [])
        texts += [t["value"] for t in turns] + [sample.meta.get("caption") or ""]
        texts += [e.get("caption", "") for e in sample.meta.get("events") or []]
    return [t for t in texts if t]


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
