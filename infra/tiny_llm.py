"""The `tiny-random` LLM recipe, the same for every command that takes `--llm`: a small LLaMA-config model with random
weights from a fixed seed and a BPE tokenizer trained on texts the command supplies.

Test and CPU-demo support (no weights can be downloaded here). vtl-train trains the tokenizer on its prompt words and
the training shards' texts (train.tiny) and saves the result in the checkpoint, which vtl-eval and vtl-chat then load;
`build-qa --generate` trains it on the generator's prompt (pipeline.qa.llm_source). The tokenizer is LLaMA-flavoured
on purpose (Metaspace pre-tokenizer, `<s>`/`</s>`/`<unk>`), so the conversation formats see the same kind of
whitespace handling as Vicuna's SentencePiece tokenizer: a leading space belongs to the next word. The same corpus and
seed always give the same tokenizer and weights. torch, tokenizers and transformers are imported inside the functions.
"""
from __future__ import annotations

import string
from collections.abc import Iterable

TINY_SIZE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 4096}
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>")


def bpe(corpus: Iterable[str], vocab_size: int = 512):
    """The raw `tokenizers.Tokenizer`: BPE trained on `corpus` as given (deterministic for the same corpus).

    Every printable ASCII character is in the initial alphabet, so no ASCII text ever maps to `<unk>`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Like LLaMA's SentencePiece model: digits are single tokens ("28" → "2", "8") and punctuation stands alone, so a
    # timestamp is always the same two digit tokens whatever follows it ("69." would otherwise become one token).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=list(string.printable) + ["\u2581"])
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def fast_tokenizer(corpus: Iterable[str], vocab_size: int = 512, model_max_length: int = 4096):
    """`bpe` wrapped as a transformers fast tokenizer (`<s>`, `</s>`, `<unk>`, `<pad>`; right padding)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=bpe(corpus, vocab_size), bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<video>", "<image>"],
                                   model_max_length=model_max_length, padding_side="right")


def random_llama(tokenizer, seed: int = 0, **size):
    """A LlamaForCausalLM of TINY_SIZE (overridden by `size`) for `tokenizer`, with weights from `seed` (the caller's
    global RNG untouched)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**TINY_SIZE, **size}, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)
