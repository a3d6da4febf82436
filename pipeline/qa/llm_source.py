"""What `build-qa`'s `--llm` and `--tokenizer` name, resolved as every command resolves a model option (infra.hub):
`tiny-random`, a local folder, or a hub name that the hub cache or a reachable hub can give (else one line within
seconds, naming the option).

`tiny-random` is the recipe vtl-train uses (infra.tiny_llm: a small LLaMA-config model with random weights from the
seed), its tokenizer trained on the generator's own prompt (persona, instructions, worked example). Its dialogues are
garbage, every one an error record: it exercises the whole generation path without any weights.
"""
from __future__ import annotations

from infra.hub import TINY_RANDOM, HubUnavailable, model_source
from pipeline.qa.llm_dialogues import build_prompt

__all__ = ["TINY_RANDOM", "HubUnavailable", "model_source", "load_causal_lm", "load_tokenizer", "recorded_name"]


def recorded_name(name: str) -> str:
    """What records say the model was: a local path made absolute, else the name as given (no hub access)."""
    from pathlib import Path

    path = Path(name).expanduser()
    return str(path.resolve()) if name != TINY_RANDOM and path.exists() else str(name)


def load_tokenizer(name: str, option: str = "--llm"):
    """The tokenizer `name` gives (tiny-random's is trained here, the same every time)."""
    if model_source(str(name), option) == TINY_RANDOM:
        from infra.tiny_llm import fast_tokenizer

        return fast_tokenizer([build_prompt([])])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name))


def load_causal_lm(name: str, seed: int, dtype=None, tokenizer=None):
    """The causal LM `name` gives: tiny-random built from `seed` for `tokenizer`, else `from_pretrained`."""
    if model_source(str(name), "--llm") == TINY_RANDOM:
        from infra.tiny_llm import random_llama

        llm = random_llama(tokenizer if tokenizer is not None else load_tokenizer(name), seed)
        return llm.to(dtype) if dtype is not None else llm
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(name), dtype=dtype)
