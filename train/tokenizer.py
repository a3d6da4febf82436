"""A small BPE tokenizer trained from texts, for the `tiny-random` LLM (tests and the CPU demo; no hub needed).

LLaMA-flavoured on purpose (Metaspace pre-tokenizer, `<s>`/`</s>`/`<unk>`), so the conversation formats see the same
kind of whitespace handling as Vicuna's SentencePiece tokenizer: a leading space belongs to the next word.
"""
from __future__ import annotations

import string
from collections.abc import Iterable

from pipeline.contract.conversation import V1_SYSTEM

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
